//! Loading: the file (TOML, or YAML by extension) with `DLI_EXPORTER__*` environment overrides
//! on top, parsed strictly so that an unknown key is named with its position; then
//! [`super::validate`]. Parse errors never quote a line of the file (it may hold a secret).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::model::{Config, Settings};
use super::validate::validate;
use super::yaml_position;
use super::{ConfigError, ENV_PREFIX, ENV_SEPARATOR, Env};

/// Keys whose values are secrets (`Secret` in the model): an environment override of one is
/// taken as a string, never parsed.
const SECRET_FIELDS: [&str; 5] = [
    "access_key",
    "secret_key",
    "security_token",
    "password",
    "proxy_url",
];

#[derive(Clone, Copy)]
enum Format {
    Toml,
    Yaml,
}

fn format_of(path: &Path) -> Result<Format, ConfigError> {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("toml") => Ok(Format::Toml),
        Some("yaml") | Some("yml") => Ok(Format::Yaml),
        _ => Err(ConfigError::Format {
            path: path.to_path_buf(),
        }),
    }
}

/// Loads a config file with environment overrides, resolves secrets and validates.
pub fn load(path: &Path, env: &Env) -> Result<Settings, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let settings = load_str(&text, format_of(path)?, env, Some(path))?;
    Ok(settings)
}

/// Loads configuration text (TOML) with environment overrides; used by tests and `--demo`.
pub fn load_toml_str(text: &str, env: &Env) -> Result<Settings, ConfigError> {
    load_str(text, Format::Toml, env, None)
}

/// `line L, column C (key K)` for the unknown key a `config` crate error names, when it stands in
/// the YAML `text` (the same shape as the TOML errors).
fn yaml_unknown_key_position(text: &str, message: &str) -> Option<String> {
    let between = |start: &str| -> Option<&str> {
        let from = message.find(start)? + start.len();
        let len = message[from..].find('`')?;
        Some(&message[from..from + len])
    };
    let field = between("unknown field `")?;
    let parent = between(" for key `").unwrap_or("");
    let (line, column) = yaml_position::key_position(text, parent, field)?;
    let key = if parent.is_empty() {
        field.to_string()
    } else {
        format!("{parent}.{field}")
    };
    Some(format!("line {line}, column {column} (key {key})"))
}

fn load_str(
    text: &str,
    format: Format,
    env: &Env,
    path: Option<&Path>,
) -> Result<Settings, ConfigError> {
    let shown_path = path
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("<inline>"));
    let parse_err = |message: String| ConfigError::Parse {
        path: shown_path.clone(),
        message,
    };
    // A strict parse of the file alone first: for TOML its errors carry line and column, so an
    // unknown or mistyped key is reported where it stands in the file.
    if let Format::Toml = format {
        toml::from_str::<Config>(text).map_err(|e| parse_err(toml_error(text, &e)))?;
    }
    let file_format = match format {
        Format::Toml => config::FileFormat::Toml,
        Format::Yaml => config::FileFormat::Yaml,
    };
    // Overrides of secret keys are kept as the strings they are: `try_parsing` would turn
    // `3.14`, `true` or `007` into a number or boolean (changing the secret, and making an error
    // message quote it). Every other override is parsed, so `PAGE_SIZE=50` is a number.
    let prefix = format!("{ENV_PREFIX}{ENV_SEPARATOR}");
    let mut overrides: HashMap<String, String> = HashMap::new();
    let mut secret_overrides: Vec<(String, String)> = Vec::new();
    for (k, v) in env {
        let Some(rest) = k.strip_prefix(&prefix) else {
            continue;
        };
        let key = rest
            .split(ENV_SEPARATOR)
            .collect::<Vec<_>>()
            .join(".")
            .to_lowercase();
        let field = key.rsplit('.').next().unwrap_or("");
        if SECRET_FIELDS.contains(&field) {
            secret_overrides.push((key, v.clone()));
        } else {
            overrides.insert(k.clone(), v.clone());
        }
    }
    let mut builder = config::Config::builder()
        .add_source(config::File::from_str(text, file_format))
        .add_source(
            config::Environment::with_prefix(ENV_PREFIX)
                .prefix_separator(ENV_SEPARATOR)
                .separator(ENV_SEPARATOR)
                .try_parsing(true)
                .source(Some(overrides)),
        );
    for (key, value) in secret_overrides {
        builder = builder
            .set_override(key.as_str(), value)
            .map_err(|e| parse_err(e.to_string()))?;
    }
    let built = builder.build().map_err(|e| parse_err(e.to_string()))?;
    let config: Config = built.try_deserialize().map_err(|e| {
        let message = e.to_string();
        // YAML errors come without a position: find an unknown key in the text ourselves. One
        // that is not in the file came from an environment override.
        let position = match format {
            Format::Yaml => yaml_unknown_key_position(text, &message),
            Format::Toml => None,
        };
        match position {
            Some(at) => parse_err(format!("{at}: {message}")),
            None => parse_err(format!(
                "{message} (file or {ENV_PREFIX}{ENV_SEPARATOR}* environment override)"
            )),
        }
    })?;
    validate(config, env, path)
}

/// A TOML error as `line L, column C (key K): message`. Unlike the error's own `Display` it never
/// quotes the offending line, which may hold a secret (`secret_kye = "..."`): only the key part of
/// it is shown.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim_end();
    let Some(span) = e.span() else {
        return message.to_string();
    };
    let before = text.get(..span.start).unwrap_or(text);
    let line_no = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    let line = text[line_start..].lines().next().unwrap_or("");
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(k) => format!("line {line_no}, column {column} (key {k}): {message}"),
        None => format!("line {line_no}, column {column}: {message}"),
    }
}
