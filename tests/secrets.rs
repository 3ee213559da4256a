//! Secret hygiene of the real binary: with distinctive credentials (AK, SK, security token,
//! password, proxy password) and the IAM tokens the simulator issued, nothing secret appears in
//! debug logs (stdout and stderr), `/metrics`, the landing page, `--check-config`, `--once`, or
//! any error message: good polls, failing queues, rejected credentials and broken configs alike.

mod common;

use std::time::Duration;

use common::child::{self, ChildGuard};
use common::*;
use dli_exporter::secret::Secret;
use dli_exporter::sim::{Fault, FaultRule, IamUser, SimConfig, Simulator};

const AK: &str = "AKSECRETHYGIENE00042";
const SK: &str = "SkHygieneTopSecretValue0000000000000000042";
const SECURITY_TOKEN: &str = "StsHygieneSecurityTokenValue000042";
const DOMAIN: &str = "hygiene_account";
const USER: &str = "hygiene_user";
const PASSWORD: &str = "PwHygieneSuperSecret042";
const PROXY_PASSWORD: &str = "PxHygieneProxyPass042";
const WRONG_SK: &str = "SkHygieneWrongValue00000000000000000000042";
const WRONG_PASSWORD: &str = "PwHygieneWrongSecret042";

async fn hygiene_sim() -> Simulator {
    let s = sim(SimConfig {
        credentials: vec![(AK.to_string(), Secret::new(SK))],
        iam_users: vec![IamUser {
            domain: DOMAIN.into(),
            user: USER.into(),
            password: Secret::new(PASSWORD),
        }],
        ..SimConfig::default()
    })
    .await;
    s.set_jobs(PID, "good", numbered_jobs("g", 150));
    s.set_jobs(PID, "bad", numbered_jobs("b", 10));
    // The failing queue makes error paths log: a 500 with a body, then a reset connection.
    s.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "internal error")).queue("bad"));
    s
}

/// Asserts that no secret (nor a long piece of one) occurs in `text`.
fn assert_clean(what: &str, text: &str, secrets: &[String]) {
    for secret in secrets {
        assert!(!secret.is_empty());
        let middle = &secret[secret.len() / 4..secret.len() / 4 + secret.len().min(12) / 2 + 6];
        assert!(
            !text.contains(secret.as_str()) && !text.contains(middle),
            "{what} leaks a secret ({}…):\n{text}",
            &secret[..4]
        );
    }
}

/// Every secret this file configures anywhere, and the access key (which is not secret, but
/// has no reason to show either).
fn fixed_secrets() -> Vec<String> {
    [
        AK,
        SK,
        SECURITY_TOKEN,
        PASSWORD,
        PROXY_PASSWORD,
        WRONG_SK,
        WRONG_PASSWORD,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A config polling the queues "good" and "bad" of `sim` with `auth` as its `[auth]` lines.
fn config_toml(sim: &Simulator, poll: &str, auth: &str) -> String {
    format!(
        r#"[poll]
{poll}

[auth]
{auth}

[[projects]]
project_id = "{PID}"
endpoint = "{}"
queues = ["good", "bad"]
"#,
        sim.base_url()
    )
}

fn aksk_toml(sim: &Simulator, sk: &str, poll: &str) -> String {
    let auth = format!(
        "access_key = \"{AK}\"\nsecret_key = \"{sk}\"\nsecurity_token = \"{SECURITY_TOKEN}\""
    );
    config_toml(sim, poll, &auth)
}

fn token_toml(sim: &Simulator, password: &str, poll: &str) -> String {
    let auth = format!(
        "kind = \"token\"\niam_endpoint = \"{}\"\ndomain_name = \"{DOMAIN}\"\n\
         user_name = \"{USER}\"\npassword = \"{password}\"",
        sim.base_url()
    );
    config_toml(sim, poll, &auth)
}

/// Writes `config` to `{name}.toml` in `dir` and runs the binary on it with `args` (at most
/// `within`).
async fn run_config(
    dir: &std::path::Path,
    name: &str,
    config: &str,
    args: &[&str],
    within: Duration,
) -> (std::process::ExitStatus, ChildGuard) {
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), config).expect("write config");
    let mut all = vec!["--config.file", &file];
    all.extend_from_slice(args);
    child::run(dir, name, &all, &[], within).await
}

const FAST: &str =
    "interval = \"400ms\"\ntimeout = \"300ms\"\nrequest_timeout = \"250ms\"\nretries = 1";

/// Runs the daemon at debug level until both queues were polled a few times, and returns what
/// it served (metrics, landing page, readiness) and logged.
async fn daemon_outputs(dir: &std::path::Path, name: &str, config: &str) -> (String, ChildGuard) {
    let file = format!("{name}.toml");
    std::fs::write(dir.join(&file), config).expect("write config");
    let listen = child::free_listen_address();
    let mut daemon = child::spawn(
        dir,
        name,
        &[
            "--config.file",
            &file,
            "--web.listen-address",
            &listen,
            "--log.level",
            "debug",
        ],
        &[],
    );
    let base = format!("http://{listen}");
    // Sixteen ListBatches requests: several polls of both queues (each walk of "good" takes
    // four), token reuse included, and time for a 1 s key to be refreshed.
    let mut served = daemon
        .scrape_until(
            &format!("{base}/metrics"),
            "sixteen list_batches requests and a poll result",
            Duration::from_secs(15),
            |t| {
                value(t, "dli_api_requests_total{operation=\"list_batches\"}")
                    .is_some_and(|polls| polls >= 16.0)
                    && t.contains("dli_poll_success{project_id=\"")
            },
        )
        .await;
    let client = http();
    for path in ["/", "/-/ready", "/-/healthy"] {
        if let Ok(r) = client.get(format!("{base}{path}")).send().await {
            served.push_str(&r.text().await.unwrap_or_default());
        }
    }
    // A reload re-reads the file and logs about it.
    if let Ok(r) = client.post(format!("{base}/-/reload")).send().await {
        served.push_str(&r.text().await.unwrap_or_default());
    }
    let status = daemon.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "{}", daemon.outputs());
    (served, daemon)
}

#[tokio::test]
async fn aksk_daemon_at_debug_level_never_shows_ak_sk_or_security_token() {
    let sim = hygiene_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (served, daemon) = daemon_outputs(dir.path(), "aksk", &aksk_toml(&sim, SK, FAST)).await;
    assert!(
        served.contains(
            "dli_poll_success{project_id=\"0a1b2c3d4e5f60718293a4b5c6d7e8f9\",queue=\"good\"} 1"
        ),
        "{served}"
    );
    let logs = daemon.outputs();
    assert!(logs.contains("level=debug"), "debug logging is on:\n{logs}");
    assert!(
        logs.contains("DLI.0999"),
        "the failing queue's error was logged:\n{logs}"
    );
    let secrets = fixed_secrets();
    assert_clean("/metrics and pages", &served, &secrets);
    assert_clean("daemon logs", &logs, &secrets);
}

#[tokio::test]
async fn token_daemon_never_shows_the_password_or_the_issued_tokens() {
    let sim = hygiene_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (served, daemon) =
        daemon_outputs(dir.path(), "token", &token_toml(&sim, PASSWORD, FAST)).await;
    let tokens: Vec<String> = sim
        .issued_tokens()
        .iter()
        .map(|t| t.expose().to_string())
        .collect();
    assert!(!tokens.is_empty(), "the simulator issued a token");
    let mut secrets = fixed_secrets();
    secrets.extend(tokens);
    assert_clean("/metrics and pages", &served, &secrets);
    assert_clean("daemon logs", &daemon.outputs(), &secrets);
}

#[tokio::test]
async fn once_and_failing_auth_never_show_secrets() {
    let sim = hygiene_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let cases = [
        ("once_aksk", aksk_toml(&sim, SK, FAST)),
        ("once_token", token_toml(&sim, PASSWORD, FAST)),
        ("wrong_sk", aksk_toml(&sim, WRONG_SK, FAST)),
        ("wrong_password", token_toml(&sim, WRONG_PASSWORD, FAST)),
    ];
    for (name, config) in &cases {
        let (status, out) = run_config(
            dir.path(),
            name,
            config,
            &["--once", "--log.level", "debug"],
            Duration::from_secs(20),
        )
        .await;
        // The "bad" queue always fails, so every run exits 1 and prints errors.
        assert!(!status.success(), "{name}\n{}", out.outputs());
        let outputs = out.outputs();
        if name.starts_with("wrong") {
            assert!(
                outputs.contains("auth") || outputs.contains("401"),
                "{name}: {outputs}"
            );
        }
        let mut secrets = fixed_secrets();
        secrets.extend(sim.issued_tokens().iter().map(|t| t.expose().to_string()));
        assert_clean(name, &outputs, &secrets);
    }
}

#[tokio::test]
async fn check_config_and_broken_configs_never_show_secrets() {
    let sim = hygiene_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = aksk_toml(&sim, SK, FAST);
    let with_proxy = good.replace(
        "queues = [\"good\", \"bad\"]",
        &format!(
            "queues = [\"good\", \"bad\"]\nproxy_url = \"http://scraper:{PROXY_PASSWORD}@127.0.0.1:9\""
        ),
    );
    let cases: Vec<(&str, String, bool)> = vec![
        ("valid", good.clone(), true),
        ("valid_proxy", with_proxy.clone(), true),
        // A typo in the key of a secret line: the parse error must not quote the line.
        ("typo", good.replace("secret_key =", "secret_kye ="), false),
        (
            "unterminated",
            good.replace(&format!("\"{SK}\""), &format!("\"{SK}")),
            false,
        ),
        // Value and file at once.
        (
            "both",
            good.replace(
                &format!("secret_key = \"{SK}\""),
                &format!("secret_key = \"{SK}\"\nsecret_key_file = \"/nonexistent\""),
            ),
            false,
        ),
        // A broken proxy URL carrying a password.
        (
            "bad_proxy",
            with_proxy.replace("@127.0.0.1:9\"", "@127.0.0.1:9/some/path\""),
            false,
        ),
        // Another problem elsewhere while secrets are set.
        (
            "bad_poll",
            good.replace("interval = \"400ms\"", "interval = \"100ms\""),
            false,
        ),
        // Keys of the other auth kind next to a password.
        (
            "mixed",
            good.replace("[auth]", &format!("[auth]\npassword = \"{PASSWORD}\"")),
            false,
        ),
    ];
    for (name, config, ok) in &cases {
        let (status, out) = run_config(
            dir.path(),
            name,
            config,
            &["--check-config"],
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(status.success(), *ok, "{name}\n{}", out.outputs());
        assert_clean(name, &out.outputs(), &fixed_secrets());
        if !ok {
            println!("{name}: {}", out.stderr().trim());
        }
    }

    // Secrets from the environment (SDK variables and overrides) are just as hidden.
    let env_only = good
        .replace(&format!("access_key = \"{AK}\"\n"), "")
        .replace(&format!("secret_key = \"{SK}\"\n"), "");
    std::fs::write(dir.path().join("env.toml"), &env_only).expect("write");
    for (name, args) in [
        (
            "env_check",
            vec!["--config.file", "env.toml", "--check-config"],
        ),
        (
            "env_once",
            vec![
                "--config.file",
                "env.toml",
                "--once",
                "--log.level",
                "debug",
            ],
        ),
    ] {
        let (status, out) = child::run(
            dir.path(),
            name,
            &args,
            &[
                ("HUAWEICLOUD_SDK_AK", AK),
                ("DLI_EXPORTER__AUTH__SECRET_KEY", SK),
                (
                    "HTTPS_PROXY",
                    &format!("http://u:{PROXY_PASSWORD}@127.0.0.1:9"),
                ),
                // The simulator is http://, so HTTP_PROXY is the one used: a dead proxy with
                // credentials, whose failure must not show them.
                (
                    "HTTP_PROXY",
                    &format!("http://u:{PROXY_PASSWORD}@127.0.0.1:9"),
                ),
            ],
            Duration::from_secs(20),
        )
        .await;
        if name == "env_once" {
            assert!(!status.success(), "the dead HTTP_PROXY was used");
            assert!(
                out.outputs().contains("connection failed"),
                "{}",
                out.outputs()
            );
        } else {
            assert!(status.success(), "{}", out.outputs());
        }
        assert_clean(name, &out.outputs(), &fixed_secrets());
    }
}

#[tokio::test]
async fn an_unreachable_proxy_with_credentials_is_reported_without_them() {
    let sim = hygiene_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    // Port 9 (discard) on loopback: nothing listens, the proxy connection is refused.
    let config = aksk_toml(&sim, SK, FAST).replace(
        "queues = [\"good\", \"bad\"]",
        &format!(
            "queues = [\"good\"]\nproxy_url = \"http://scraper:{PROXY_PASSWORD}@127.0.0.1:9\""
        ),
    );
    let (status, out) = run_config(
        dir.path(),
        "proxy",
        &config,
        &["--once", "--log.level", "debug"],
        Duration::from_secs(20),
    )
    .await;
    assert!(!status.success(), "{}", out.outputs());
    println!(
        "unreachable proxy: {}",
        out.stderr().lines().last().unwrap_or_default()
    );
    assert_clean("unreachable proxy", &out.outputs(), &fixed_secrets());
}

/// `--check-config` of `config` with the environment cleared and `env` set (values as bytes).
fn check_config_with_env(config: &str, env: &[(&[u8], &[u8])]) -> (Option<i32>, String) {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("c.toml"), config).expect("write");
    let mut command = std::process::Command::new(child::BIN);
    command
        .args(["--check-config", "--config.file", "c.toml"])
        .current_dir(dir.path())
        .env_clear();
    for (k, v) in env {
        command.env(
            std::ffi::OsStr::from_bytes(k),
            std::ffi::OsStr::from_bytes(v),
        );
    }
    let out = command.output().expect("run");
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn plain_config(secret_key_line: &str) -> String {
    format!(
        "[auth]\naccess_key = \"{AK}\"\n{secret_key_line}\n[[projects]]\nproject_id = \"{PID}\"\n\
         region = \"cn-north-4\"\nqueues = [\"etl\"]\n"
    )
}

#[test]
fn environment_variables_that_are_not_utf8_are_ignored_unless_they_are_ours() {
    let config = plain_config(&format!("secret_key = \"{SK}\""));
    let (code, out) = check_config_with_env(&config, &[(b"LANG", b"\xff\xfe"), (b"\xffX", b"1")]);
    assert_eq!(code, Some(0), "{out}");
    for ours in [&b"DLI_EXPORTER__POLL__INTERVAL"[..], b"HUAWEICLOUD_SDK_SK"] {
        let (code, out) = check_config_with_env(&config, &[(ours, b"Sk\xffSecretPart042")]);
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains(std::str::from_utf8(ours).expect("ascii")),
            "{out}"
        );
        assert!(
            !out.contains("SecretPart042") && !out.contains("panicked"),
            "{out}"
        );
    }
}

#[test]
fn secrets_that_look_like_numbers_are_strings_and_never_shown() {
    // From the environment: a string, whatever it looks like.
    let config = plain_config("");
    for value in ["3.14159265", "true", "0042424242"] {
        let (code, out) = check_config_with_env(
            &config,
            &[(b"DLI_EXPORTER__AUTH__SECRET_KEY", value.as_bytes())],
        );
        assert_eq!(code, Some(0), "{value}: {out}");
        assert!(!out.contains(value), "{out}");
    }
    // Unquoted in the file: an error naming the key, not the value.
    for value in ["3.14159265", "true", "4242424242"] {
        let (code, out) =
            check_config_with_env(&plain_config(&format!("secret_key = {value}")), &[]);
        assert_eq!(code, Some(1), "{value}: {out}");
        assert!(out.contains("secret_key"), "{out}");
        assert!(
            !out.contains(&format!("= {value}")) && !out.contains(&format!("`{value}`")),
            "{out}"
        );
    }
}

const ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.HygieneProjectedServiceAccountToken042.c2lnbmF0dXJl";
const WRONG_ID_TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.HygieneRejectedServiceAccountToken042.c2ln";

fn metadata_toml(sim: &Simulator, poll: &str) -> String {
    let auth = format!(
        "kind = \"metadata\"\nmetadata_endpoint = \"{}\"",
        sim.base_url()
    );
    config_toml(sim, poll, &auth)
}

fn oidc_toml(sim: &Simulator, poll: &str, token_file: &std::path::Path) -> String {
    let auth = format!(
        "kind = \"oidc\"\niam_endpoint = \"{}\"\nidp_id = \"{}\"\nid_token_file = {:?}",
        sim.base_url(),
        dli_exporter::sim::DEMO_IDP_ID,
        token_file.display().to_string()
    );
    config_toml(sim, poll, &auth)
}

/// A simulator whose temporary keys live 1 s (so the daemon refreshes them while it runs) and
/// that accepts [`ID_TOKEN`].
async fn keyless_hygiene_sim() -> Simulator {
    let s = sim(SimConfig {
        temporary_key_lifetime: Duration::from_secs(1),
        ..SimConfig::default()
    })
    .await;
    s.set_jobs(PID, "good", numbered_jobs("g", 150));
    s.set_jobs(PID, "bad", numbered_jobs("b", 10));
    s.add_fault(FaultRule::always(Fault::status(500, "DLI.0999", "internal error")).queue("bad"));
    s.accept_id_tokens(&[ID_TOKEN]);
    s
}

/// Every secret the keyless endpoints issued, the id tokens, and this file's fixed secrets.
fn keyless_secrets(sim: &Simulator) -> Vec<String> {
    let issued: Vec<String> = sim
        .issued_keyless_secrets()
        .iter()
        .map(|s| s.expose().to_string())
        .collect();
    assert!(issued.len() >= 6, "keys and tokens were issued");
    let mut secrets = fixed_secrets();
    secrets.extend(issued);
    secrets.push(ID_TOKEN.into());
    secrets.push(WRONG_ID_TOKEN.into());
    secrets
}

#[tokio::test]
async fn metadata_and_oidc_daemons_never_show_temporary_keys_or_tokens() {
    let sim = keyless_hygiene_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("id-token");
    std::fs::write(&token_file, format!("{ID_TOKEN}\n")).expect("write token");
    // The first fetches fail (logged with their errors), then keys are issued and refreshed.
    sim.outage(
        dli_exporter::sim::Service::Metadata,
        Duration::from_millis(600),
        dli_exporter::sim::Outage::Status(500),
    );
    let (served_md, metadata) =
        daemon_outputs(dir.path(), "metadata", &metadata_toml(&sim, FAST)).await;
    sim.outage(
        dli_exporter::sim::Service::Oidc,
        Duration::from_millis(600),
        dli_exporter::sim::Outage::Reset,
    );
    let (served_oidc, oidc) =
        daemon_outputs(dir.path(), "oidc", &oidc_toml(&sim, FAST, &token_file)).await;
    let stats = sim.stats();
    assert!(stats.temporary_keys_issued >= 3, "{stats:?}");
    let secrets = keyless_secrets(&sim);
    for (name, served, daemon) in [
        ("metadata", served_md, metadata),
        ("oidc", served_oidc, oidc),
    ] {
        let logs = daemon.outputs();
        assert!(
            logs.contains("level=debug"),
            "{name}: debug logging is on:\n{logs}"
        );
        assert!(
            logs.contains("temporary credentials obtained")
                && logs.contains("cannot obtain temporary credentials"),
            "{name}: the fetches and the failed one were logged:\n{logs}"
        );
        assert!(
            served.contains(&format!("dli_api_requests_total{{operation=\"{name}\"}}")),
            "{served}"
        );
        assert_clean(&format!("{name}: /metrics and pages"), &served, &secrets);
        assert_clean(&format!("{name}: daemon logs"), &logs, &secrets);
    }
}

#[tokio::test]
async fn keyless_once_check_config_and_rejected_tokens_never_show_secrets() {
    let sim = keyless_hygiene_sim().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let good = dir.path().join("good-token");
    std::fs::write(&good, ID_TOKEN).expect("write token");
    let wrong = dir.path().join("wrong-token");
    std::fs::write(&wrong, WRONG_ID_TOKEN).expect("write token");
    let cases = [
        ("once_metadata", metadata_toml(&sim, FAST), "--once"),
        ("once_oidc", oidc_toml(&sim, FAST, &good), "--once"),
        ("wrong_id_token", oidc_toml(&sim, FAST, &wrong), "--once"),
        ("check_oidc", oidc_toml(&sim, FAST, &good), "--check-config"),
        (
            "check_metadata",
            metadata_toml(&sim, FAST),
            "--check-config",
        ),
    ];
    let mut outputs = Vec::new();
    for (name, config, mode) in &cases {
        let (status, out) = run_config(
            dir.path(),
            name,
            config,
            &[mode, "--log.level", "debug"],
            Duration::from_secs(20),
        )
        .await;
        // `--once` always fails on the "bad" queue; the configs themselves are valid.
        assert_eq!(
            status.success(),
            *mode == "--check-config",
            "{name}\n{}",
            out.outputs()
        );
        if *name == "wrong_id_token" {
            assert!(out.outputs().contains("oidc"), "{}", out.outputs());
            assert!(out.outputs().contains("401"), "{}", out.outputs());
        }
        outputs.push((name, out.outputs()));
    }
    let secrets = keyless_secrets(&sim);
    for (name, text) in &outputs {
        assert_clean(name, text, &secrets);
    }
}
