//! One function per mode of the binary: [`check_config`], [`once`], [`probe`] and [`serve`]
//! (which also runs `--demo`). `main` parses the flags, sets up logging and calls exactly one of them.
//!
//! It owns what each mode reads (config file, environment, web config), prints and returns as
//! exit code. It must not parse flags or set up logging.

use std::io::Write;
use std::process::ExitCode;

use super::shard::{os_hostname, resolve_shard};
use super::{App, StartError, StartOptions, demo, queue_keys, signals};
use crate::cli::Flags;
use crate::config::{self, ConfigError, Env, Settings};
use crate::sim::Simulator;
use crate::version::LONG_VERSION;
use crate::web::{WebConfigError, WebConfigWatcher};

/// Why a mode could not run; each names the input or address at fault.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    WebConfig(#[from] WebConfigError),
    #[error("{0}")]
    Flag(String),
    #[error("starting the demo simulator: {0}")]
    Demo(std::io::Error),
    #[error("cannot listen on {address} (web.listen_address / --web.listen-address): {source}")]
    Listen {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("writing to stdout: {0}")]
    Stdout(std::io::Error),
    /// Names the variable, never its value (it may be a credential).
    #[error(
        "environment variable {name} is not valid UTF-8 text; dli_exporter reads every DLI_EXPORTER__* and HUAWEICLOUD_SDK_* variable, so fix or unset it"
    )]
    Environment { name: String },
}

/// Prefixes of the environment variables the exporter reads itself. (The proxy variables are
/// read by the HTTP client, which ignores values that are not UTF-8.)
const OWN_ENV_PREFIXES: [&str; 2] = ["DLI_EXPORTER__", "HUAWEICLOUD_SDK_"];

/// The process environment, for `DLI_EXPORTER__*` overrides and the SDK's credential variables.
fn process_env() -> Result<Env, RunError> {
    own_env(std::env::vars_os())
}

/// The variables of `vars` the exporter reads. Any other variable is ignored, whatever bytes it
/// holds; one of ours that is not UTF-8 (name or value) is an error naming it.
fn own_env(
    vars: impl IntoIterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> Result<Env, RunError> {
    let own = |name: &str| OWN_ENV_PREFIXES.iter().any(|p| name.starts_with(p));
    let mut env = Env::new();
    for (name, value) in vars {
        let shown = name.to_string_lossy();
        if !own(&shown) {
            continue;
        }
        match (name.to_str(), value.into_string()) {
            (Some(name), Ok(value)) => {
                env.insert(name.to_string(), value);
            }
            _ => {
                return Err(RunError::Environment {
                    name: shown.into_owned(),
                });
            }
        }
    }
    Ok(env)
}

/// `--check-config`: loads and validates the config (and the web config, if given), prints a
/// summary without secrets to stdout or the problems to stderr; exit 0 or 1.
pub fn check_config(flags: &Flags) -> ExitCode {
    let loaded = process_env()
        .map_err(|e| e.to_string())
        .and_then(|env| config::load(&flags.config_file, &env).map_err(|e| e.to_string()));
    let mut ok = match loaded {
        Ok(settings) => {
            print!("{}", config::summary(&settings));
            match shard(flags) {
                Ok(None) => true,
                Ok(Some(s)) => {
                    let polled = queue_keys(&settings, Some(&s)).len();
                    let listed = settings.queue_pairs().count();
                    println!("{s}: polls {polled} of the {listed} listed queues");
                    true
                }
                Err(e) => {
                    eprintln!("{e}");
                    false
                }
            }
        }
        Err(e) => {
            eprintln!("{e}");
            false
        }
    };
    if let Some(path) = &flags.web_config_file {
        match WebConfigWatcher::load(path) {
            Ok(web) => println!("web config {}: {}", path.display(), web.current().summary()),
            Err(e) => {
                eprintln!("{e}");
                ok = false;
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The shard the flags ask for, the host name read for `--shard auto`.
fn shard(flags: &Flags) -> Result<Option<crate::poll::shard::Shard>, RunError> {
    resolve_shard(flags.shard, flags.total_shards, os_hostname).map_err(RunError::Flag)
}

/// The settings to run with: the config file with the flags applied.
fn settings(flags: &Flags, env: &Env) -> Result<Settings, RunError> {
    let mut settings = config::load(&flags.config_file, env)?;
    flags.apply(&mut settings).map_err(RunError::Flag)?;
    Ok(settings)
}

/// `--once`: polls every queue one time, prints the exposition to stdout and each failure to
/// stderr; exit 1 if any queue failed.
pub async fn once(flags: &Flags) -> Result<ExitCode, RunError> {
    let settings = settings(flags, &process_env()?)?;
    let shard = shard(flags)?;
    let report = super::poll_once(&settings, shard.as_ref()).await?;
    std::io::stdout()
        .write_all(&report.exposition)
        .map_err(RunError::Stdout)?;
    let mut code = ExitCode::SUCCESS;
    for e in &report.list_errors {
        eprintln!("dli_exporter: {e}");
        code = ExitCode::FAILURE;
    }
    for o in report.polls.iter().filter(|o| !o.success) {
        eprintln!(
            "dli_exporter: {}",
            o.error.as_deref().unwrap_or("poll failed")
        );
        code = ExitCode::FAILURE;
    }
    Ok(code)
}

/// `--probe`: characterises the API of every configured queue (docs/architecture.md,
/// "--probe"), prints each queue's readable report and its `probe …` line to stdout; exit 1 if
/// a queue list failed or any probe did not complete.
pub async fn probe(flags: &Flags) -> Result<ExitCode, RunError> {
    let settings = settings(flags, &process_env()?)?;
    let run = super::probe_all(&settings).await?;
    let mut out = String::new();
    for e in &run.list_errors {
        out.push_str(&format!("{e}\n\n"));
    }
    for report in &run.reports {
        out.push_str(&format!("{}\n{}\n\n", report.text(), report.line()));
    }
    if run.reports.is_empty() {
        out.push_str("no queue to probe\n");
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(RunError::Stdout)?;
    for e in &run.list_errors {
        eprintln!("dli_exporter: {e}");
    }
    for r in run.reports.iter().filter(|r| !r.completed()) {
        eprintln!(
            "dli_exporter: probe of project {} queue {} did not complete: {}",
            r.project_id,
            r.queue,
            r.error.as_deref().unwrap_or("unknown error")
        );
    }
    Ok(if run.completed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The daemon (also `--demo`): listens, polls, serves `/metrics` until SIGTERM or SIGINT, reloads
/// on SIGHUP and `POST /-/reload`.
pub async fn serve(flags: &Flags) -> Result<ExitCode, RunError> {
    // Bad shard flags stop the start before anything listens.
    let shard = shard(flags)?;
    // Serving without the TLS or auth the operator asked for would be worse than not starting.
    let web = match &flags.web_config_file {
        Some(path) => Some(WebConfigWatcher::load(path)?),
        None => None,
    };
    // The demo keeps its simulator alive for as long as the exporter runs.
    let (mut settings, _simulator, source): (Settings, Option<Simulator>, _) = if flags.demo {
        let (sim, settings) = demo::start().await.map_err(RunError::Demo)?;
        (settings, Some(sim), None)
    } else {
        let env = process_env()?;
        let settings = config::load(&flags.config_file, &env)?;
        (settings, None, Some((flags.config_file.clone(), env)))
    };
    let file_web = settings.web.clone();
    flags.apply(&mut settings).map_err(RunError::Flag)?;

    let address = settings.web.listen_address.clone();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|source| RunError::Listen { address, source })?;
    let web_summary = web.as_ref().map(|w| w.current().summary());
    let listed_queues = settings.queue_pairs().count();
    let discovering = settings
        .projects
        .iter()
        .filter(|p| p.discover.is_some())
        .count();
    let telemetry_path = settings.web.telemetry_path.clone();
    let app = App::launch(
        settings,
        listener,
        StartOptions {
            source,
            web,
            enable_lifecycle: flags.lifecycle_enabled(),
            file_web: Some(file_web),
            shard,
            ..StartOptions::default()
        },
    )
    .await?;
    tracing::info!(address = %app.addr, telemetry_path = %telemetry_path,
        web_config = web_summary.as_deref().unwrap_or("none"),
        listed_queues, discovering_projects = discovering, version = LONG_VERSION, "listening");
    let token = app.shutdown_token();
    tokio::spawn(async move {
        signals::shutdown().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    signals::reload_on_sighup(app.reload_handle());
    app.run_until_cancelled().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(all(test, unix))]
mod tests {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    use super::*;

    fn os(bytes: &[u8]) -> OsString {
        OsString::from_vec(bytes.to_vec())
    }

    #[test]
    fn foreign_variables_are_ignored_whatever_they_hold_and_ours_must_be_text() {
        let env = own_env([
            (os(b"LANG"), os(b"\xff\xfe")),
            (os(b"\xffWEIRD"), os(b"x")),
            (os(b"DLI_EXPORTER__POLL__INTERVAL"), os(b"30s")),
            (os(b"HUAWEICLOUD_SDK_AK"), os(b"ak")),
            (os(b"PATH"), os(b"/bin")),
        ])
        .expect("foreign variables do not matter");
        assert_eq!(env.len(), 2);
        assert_eq!(
            env.get("HUAWEICLOUD_SDK_AK").map(String::as_str),
            Some("ak")
        );

        let e = own_env([(os(b"HUAWEICLOUD_SDK_SK"), os(b"s3cr\xffet"))]).expect_err("ours");
        let msg = e.to_string();
        assert!(msg.contains("HUAWEICLOUD_SDK_SK"), "{msg}");
        assert!(!msg.contains("s3cr"), "{msg}");
        let e = own_env([(os(b"DLI_EXPORTER__AUTH__\xff"), os(b"v"))]).expect_err("ours");
        assert!(e.to_string().contains("DLI_EXPORTER__AUTH__"), "{e}");
    }
}
