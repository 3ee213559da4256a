//! The command-line edge of the binary: flags named the Prometheus way
//! (`--web.listen-address`; the list is in docs/architecture.md, "Command line"), the logging
//! setup (`logging`) and the allocator setting `main` applies first (`malloc`).
//!
//! It only parses and sets up; applying flags over the configuration is [`Flags::apply`], what
//! each mode does belongs to `app`, and nothing here reads files or starts anything.

pub mod logging;
pub mod malloc;

use std::path::PathBuf;

use clap::{ArgAction, Parser, ValueEnum};

use crate::config::{
    LISTEN_ADDRESS_RULE, Settings, TELEMETRY_PATH_RULE, is_valid_telemetry_path,
    normalize_listen_address,
};

/// Log verbosity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Logfmt,
    Json,
}

pub use crate::version::LONG_VERSION;

/// The value of `--shard`: a shard number, or `auto` (the trailing number of the host name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardArg {
    Ordinal(u32),
    Auto,
}

fn parse_shard(value: &str) -> Result<ShardArg, String> {
    match value {
        "auto" => Ok(ShardArg::Auto),
        n => n.parse().map(ShardArg::Ordinal).map_err(|_| {
            "must be a shard number from 0, or auto (the number at the end of the host name)"
                .to_string()
        }),
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "dli_exporter",
    version = LONG_VERSION,
    about = "Prometheus exporter for Huawei Cloud DLI Spark batch jobs",
    long_about = None
)]
pub struct Flags {
    /// Configuration file (TOML, or YAML by its .yaml/.yml extension).
    #[arg(
        long = "config.file",
        value_name = "PATH",
        default_value = "dli_exporter.toml"
    )]
    pub config_file: PathBuf,

    /// Address to listen on for the web interface and telemetry [default: :10049, or web.listen_address].
    #[arg(long = "web.listen-address", value_name = "ADDR")]
    pub listen_address: Option<String>,

    /// Path under which to expose metrics [default: /metrics, or web.telemetry_path].
    #[arg(long = "web.telemetry-path", value_name = "PATH")]
    pub telemetry_path: Option<String>,

    /// Web configuration file (exporter-toolkit format: TLS, client certificates, basic auth,
    /// headers); re-read when it or the files it names change.
    #[arg(long = "web.config.file", value_name = "PATH")]
    pub web_config_file: Option<PathBuf>,

    /// Enable POST /-/reload (on by default; anyone who reaches the port can use it unless
    /// basic auth is configured). `--web.enable-lifecycle=false` or
    /// `--no-web.enable-lifecycle` makes it answer 403; SIGHUP still reloads.
    #[arg(
        long = "web.enable-lifecycle",
        value_name = "BOOL",
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true",
        action = ArgAction::Set,
        overrides_with = "no_enable_lifecycle"
    )]
    pub enable_lifecycle: bool,

    /// Same as `--web.enable-lifecycle=false`.
    #[arg(
        long = "no-web.enable-lifecycle",
        overrides_with = "enable_lifecycle",
        hide = true
    )]
    pub no_enable_lifecycle: bool,

    /// Only log messages with the given severity or above.
    #[arg(long = "log.level", value_enum, default_value = "info")]
    pub log_level: LogLevel,

    /// Output format of log messages.
    #[arg(long = "log.format", value_enum, default_value = "logfmt")]
    pub log_format: LogFormat,

    /// Start an embedded DLI simulator with lively demo jobs and poll it; no config needed.
    #[arg(long, conflicts_with_all = ["once", "check_config"])]
    pub demo: bool,

    /// Poll every queue once, print the exposition to stdout, exit 1 if any queue failed.
    #[arg(long, conflicts_with = "check_config")]
    pub once: bool,

    /// Find out what the DLI API does for every configured queue (meaning of total, size cap,
    /// default order, order/state/start-end parameters, latency) with at most 50 read-only
    /// requests per queue; print a report and one `probe ...` line per queue, exit 0 or 1.
    #[arg(long, conflicts_with_all = ["once", "check_config", "demo"])]
    pub probe: bool,

    /// Load and validate the configuration, print a summary without secrets, exit 0 or 1.
    #[arg(long = "check-config")]
    pub check_config: bool,

    /// This exporter's shard, from 0, of --total-shards: it polls only the project x queue pairs
    /// assigned to it. `auto`: the number after the last '-' of the host name (a StatefulSet's
    /// pod ordinal).
    #[arg(
        long = "shard",
        value_name = "N|auto",
        value_parser = parse_shard,
        requires = "total_shards",
        allow_hyphen_values = true
    )]
    pub shard: Option<ShardArg>,

    /// How many exporters share the configured queues (each with its own --shard).
    #[arg(
        long = "total-shards",
        value_name = "M",
        requires = "shard",
        allow_hyphen_values = true
    )]
    pub total_shards: Option<u32>,
}

/// What the binary does, chosen by the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--check-config`.
    CheckConfig,
    /// `--once`.
    Once,
    /// `--probe`.
    Probe,
    /// The daemon, polling the configured account or (`--demo`) the embedded simulator.
    Serve,
}

impl Flags {
    /// The mode the flags select (clap already refuses conflicting ones).
    pub fn mode(&self) -> Mode {
        if self.check_config {
            Mode::CheckConfig
        } else if self.once {
            Mode::Once
        } else if self.probe {
            Mode::Probe
        } else {
            Mode::Serve
        }
    }

    /// Whether `POST /-/reload` is served (`--web.enable-lifecycle`, the last of it and its
    /// `--no-` form winning).
    pub fn lifecycle_enabled(&self) -> bool {
        self.enable_lifecycle && !self.no_enable_lifecycle
    }

    /// Flags given on the command line win over the configuration file.
    pub fn apply(&self, settings: &mut Settings) -> Result<(), String> {
        if let Some(addr) = &self.listen_address {
            settings.web.listen_address = normalize_listen_address(addr)
                .ok_or_else(|| format!("--web.listen-address {addr:?} {LISTEN_ADDRESS_RULE}"))?;
        }
        if let Some(path) = &self.telemetry_path {
            if !is_valid_telemetry_path(path) {
                return Err(format!(
                    "--web.telemetry-path {path:?} {TELEMETRY_PATH_RULE}"
                ));
            }
            settings.web.telemetry_path = path.clone();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_style_flags_parse() {
        let f = Flags::try_parse_from([
            "dli_exporter",
            "--config.file",
            "x.toml",
            "--web.listen-address",
            ":9999",
            "--log.level",
            "debug",
            "--log.format",
            "json",
            "--once",
        ])
        .expect("parses");
        assert_eq!(f.config_file, PathBuf::from("x.toml"));
        assert_eq!(f.log_level, LogLevel::Debug);
        assert_eq!(f.log_format, LogFormat::Json);
        assert!(f.once);
        assert!(Flags::try_parse_from(["dli_exporter", "--demo", "--once"]).is_err());
        let probe = Flags::try_parse_from(["dli_exporter", "--probe"]).expect("parses");
        assert_eq!(probe.mode(), Mode::Probe);
        for other in ["--once", "--demo", "--check-config"] {
            assert!(
                Flags::try_parse_from(["dli_exporter", "--probe", other]).is_err(),
                "--probe with {other}"
            );
        }
        assert!(Flags::try_parse_from(["dli_exporter", "--log.level", "trace"]).is_err());
    }

    #[test]
    fn lifecycle_flag_defaults_on_and_turns_off_both_ways() {
        let parse = |args: &[&str]| {
            let mut all = vec!["dli_exporter"];
            all.extend_from_slice(args);
            Flags::try_parse_from(all)
                .expect("parses")
                .lifecycle_enabled()
        };
        assert!(parse(&[]));
        assert!(parse(&["--web.enable-lifecycle"]));
        assert!(parse(&["--web.enable-lifecycle=true"]));
        assert!(!parse(&["--web.enable-lifecycle=false"]));
        assert!(!parse(&["--no-web.enable-lifecycle"]));
        assert!(parse(&[
            "--no-web.enable-lifecycle",
            "--web.enable-lifecycle"
        ]));
        assert!(!parse(&[
            "--web.enable-lifecycle",
            "--no-web.enable-lifecycle"
        ]));
        assert!(Flags::try_parse_from(["x", "--web.enable-lifecycle=maybe"]).is_err());
    }

    #[test]
    fn flags_follow_the_same_rules_as_the_config_keys() {
        let toml = r#"
[auth]
access_key = "ak"
secret_key = "sk"
[[projects]]
project_id = "p1"
region = "cn-north-4"
queues = ["q"]
"#;
        let mut settings =
            crate::config::load_toml_str(toml, &crate::config::Env::new()).expect("valid config");
        let flags = |args: &[&str]| {
            let mut all = vec!["dli_exporter"];
            all.extend_from_slice(args);
            Flags::try_parse_from(all).expect("parses")
        };
        for bad in ["/m?x", "/m#x", "/m x", "/-/metrics", "/", "metrics"] {
            let e = flags(&["--web.telemetry-path", bad])
                .apply(&mut settings)
                .expect_err(bad);
            assert!(e.contains("--web.telemetry-path") && e.contains(bad), "{e}");
        }
        flags(&["--web.telemetry-path", "/m", "--web.listen-address", ":1"])
            .apply(&mut settings)
            .expect("valid flags");
        assert_eq!(settings.web.telemetry_path, "/m");
        assert_eq!(settings.web.listen_address, "0.0.0.0:1");
        let e = flags(&["--web.listen-address", "local host:1"])
            .apply(&mut settings)
            .expect_err("space");
        assert!(e.contains("--web.listen-address"), "{e}");
    }

    #[test]
    fn shard_flags_come_together() {
        let parse = |args: &[&str]| {
            let mut all = vec!["dli_exporter"];
            all.extend_from_slice(args);
            Flags::try_parse_from(all)
        };
        let f = parse(&["--shard", "2", "--total-shards", "3"]).expect("parses");
        assert_eq!(
            (f.shard, f.total_shards),
            (Some(ShardArg::Ordinal(2)), Some(3))
        );
        let f = parse(&["--shard=auto", "--total-shards=3"]).expect("parses");
        assert_eq!(f.shard, Some(ShardArg::Auto));
        for (args, flag) in [
            (&["--shard", "1"][..], "--total-shards"),
            (&["--total-shards", "3"][..], "--shard"),
            (&["--shard", "-1", "--total-shards", "3"][..], "--shard"),
            (&["--shard", "one", "--total-shards", "3"][..], "--shard"),
            (
                &["--shard", "1", "--total-shards", "x"][..],
                "--total-shards",
            ),
            (
                &["--shard", "1", "--total-shards", "-3"][..],
                "--total-shards",
            ),
        ] {
            let e = parse(args).expect_err("rejected").to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            normalize_listen_address(":10049").as_deref(),
            Some("0.0.0.0:10049")
        );
        assert_eq!(
            normalize_listen_address("127.0.0.1:1").as_deref(),
            Some("127.0.0.1:1")
        );
        assert_eq!(
            normalize_listen_address("[::1]:1").as_deref(),
            Some("[::1]:1")
        );
        assert_eq!(normalize_listen_address("::1:1"), None);
        assert_eq!(normalize_listen_address("10049"), None);
        assert_eq!(normalize_listen_address("local host:1"), None);
        assert_eq!(normalize_listen_address("h:99999"), None);
    }
}
