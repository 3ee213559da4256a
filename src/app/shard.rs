//! `--shard N|auto` and `--total-shards M` (docs/architecture.md, "Shards"): the flags turned
//! into a [`Shard`], the host name read for `auto`, and the log line that says what a shard
//! polls.
//!
//! It owns reading the host name and the errors that name the flags. Which queues a shard owns
//! is `poll::shard`'s pure function; this file never decides that.

use std::collections::BTreeMap;

use crate::cli::ShardArg;
use crate::config::Settings;
use crate::poll::shard::{Shard, ordinal_from_hostname};

/// Where Linux keeps the host name (what `gethostname` returns).
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The host name: the kernel's, else `$HOSTNAME`.
pub fn os_hostname() -> Result<String, String> {
    let from_kernel = std::fs::read_to_string(HOSTNAME_FILE)
        .map(|s| s.trim().to_string())
        .map_err(|e| e.to_string());
    match from_kernel {
        Ok(name) if !name.is_empty() => Ok(name),
        kernel => match std::env::var("HOSTNAME") {
            Ok(name) if !name.trim().is_empty() => Ok(name.trim().to_string()),
            _ => Err(format!(
                "cannot tell the host name ({HOSTNAME_FILE}: {}; $HOSTNAME is not set)",
                kernel.err().unwrap_or_else(|| "empty".into())
            )),
        },
    }
}

/// The shard the flags ask for (`None`: not sharded). `hostname` is asked only for
/// `--shard auto`. Every error names the flag at fault.
pub fn resolve_shard(
    shard: Option<ShardArg>,
    total: Option<u32>,
    hostname: impl FnOnce() -> Result<String, String>,
) -> Result<Option<Shard>, String> {
    let (shard, total) = match (shard, total) {
        (None, None) => return Ok(None),
        (Some(s), Some(t)) => (s, t),
        (Some(_), None) => return Err("--shard needs --total-shards".into()),
        (None, Some(_)) => return Err("--total-shards needs --shard".into()),
    };
    let ordinal = match shard {
        ShardArg::Ordinal(n) => n,
        ShardArg::Auto => {
            let name = hostname().map_err(|e| format!("--shard auto: {e}"))?;
            let n = ordinal_from_hostname(&name).ok_or_else(|| {
                format!(
                    "--shard auto: the host name {name:?} does not end in -<number> (as a StatefulSet's pods are named); give --shard a number instead"
                )
            })?;
            if n >= total {
                return Err(format!(
                    "--shard auto: the host name {name:?} means shard {n}, which must be below --total-shards {total} (does the StatefulSet have more replicas than --total-shards?)"
                ));
            }
            n
        }
    };
    Shard::new(ordinal, total)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Says which share of the listed queues this exporter polls, `wanted` being each project's
/// queues it polls now (at start and after each reload; discovered queues are assigned as they
/// are found and logged then). A shard with none says so plainly: it polls nothing, reports
/// `dli_up` 1, and discovery may still bring it queues.
pub fn log_assignment(
    shard: Option<&Shard>,
    settings: &Settings,
    wanted: &BTreeMap<String, Vec<String>>,
) {
    let Some(shard) = shard else {
        return;
    };
    let listed = settings.queue_pairs().count();
    let polled: usize = wanted.values().map(Vec::len).sum();
    let discovering = settings.projects.iter().any(|p| p.discover.is_some());
    if polled == 0 {
        tracing::warn!(
            shard = shard.ordinal(),
            total_shards = shard.total(),
            listed,
            discovering,
            "no queue is assigned to this shard: it polls nothing and reports dli_up 1 (more shards than queues?)"
        );
    } else {
        tracing::info!(
            shard = shard.ordinal(),
            total_shards = shard.total(),
            polled,
            listed,
            discovering,
            "polling the queues assigned to this shard"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &'static str) -> impl FnOnce() -> Result<String, String> {
        move || Ok(name.to_string())
    }

    fn never() -> impl FnOnce() -> Result<String, String> {
        || panic!("the host name is read only for --shard auto")
    }

    #[test]
    fn numbers_and_auto() {
        assert_eq!(resolve_shard(None, None, never()), Ok(None));
        assert_eq!(
            resolve_shard(Some(ShardArg::Ordinal(1)), Some(3), never()),
            Ok(Shard::new(1, 3).ok())
        );
        assert_eq!(
            resolve_shard(Some(ShardArg::Auto), Some(3), host("dli-exporter-2")),
            Ok(Shard::new(2, 3).ok())
        );
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (shard, total, hostname, flag) in [
            (
                Some(ShardArg::Ordinal(3)),
                Some(3),
                "x-0",
                "--shard 3 must be below --total-shards 3",
            ),
            (
                Some(ShardArg::Ordinal(0)),
                None,
                "x-0",
                "--shard needs --total-shards",
            ),
            (None, Some(2), "x-0", "--total-shards needs --shard"),
            (
                Some(ShardArg::Ordinal(0)),
                Some(0),
                "x-0",
                "--total-shards 0",
            ),
            (
                Some(ShardArg::Auto),
                Some(3),
                "dli-exporter",
                "--shard auto: the host name \"dli-exporter\"",
            ),
            (
                Some(ShardArg::Auto),
                Some(3),
                "dli-exporter-3",
                "--shard auto: the host name \"dli-exporter-3\" means shard 3",
            ),
        ] {
            let name = hostname.to_string();
            let e = resolve_shard(shard, total, move || Ok(name)).expect_err(flag);
            assert!(e.contains(flag), "{e} should say {flag}");
        }
        let e = resolve_shard(Some(ShardArg::Auto), Some(2), || Err("no name".into()))
            .expect_err("no host name");
        assert!(e.starts_with("--shard auto: no name"), "{e}");
    }

    #[test]
    fn the_host_name_of_this_machine_is_readable() {
        let name = os_hostname().expect("a host name");
        assert!(!name.is_empty() && !name.contains('\n'));
    }
}
