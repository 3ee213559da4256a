//! Tests of loading and validation: each rule, each error naming its key, secrets never shown.

use std::path::Path;
use std::time::Duration;

use super::*;
use crate::secret::Secret;

pub(super) const GOOD: &str = r#"
[poll]
interval = "30s"
timeout = "20s"

[auth]
access_key = "AKEXAMPLE"
secret_key = "SKEXAMPLE"

[[projects]]
project_id = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
region = "cn-north-4"
queues = ["default", "etl"]
"#;

pub(super) fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn err_keys(text: &str, e: &Env) -> Vec<String> {
    match load_toml_str(text, e) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(err) => {
            let keys: Vec<String> = err.keys().iter().map(|k| k.to_string()).collect();
            assert!(!keys.is_empty(), "expected a validation error, got: {err}");
            for k in &keys {
                assert!(
                    err.to_string().contains(k.as_str()),
                    "message names {k}: {err}"
                );
            }
            keys
        }
    }
}

#[test]
fn good_config_loads_with_defaults_and_derived_endpoint() {
    let s = load_toml_str(GOOD, &Env::new()).expect("valid");
    assert_eq!(s.poll.interval, Duration::from_secs(30));
    assert_eq!(s.poll.page_size, 100);
    assert_eq!(s.web.listen_address, "0.0.0.0:10049");
    assert_eq!(s.projects.len(), 1);
    assert_eq!(
        s.projects[0].endpoint,
        "https://dli.cn-north-4.myhuaweicloud.com"
    );
    assert_eq!(s.projects[0].queues, vec!["default", "etl"]);
    assert!(
        matches!(&s.projects[0].credentials, Credentials::AkSk { access_key, .. } if access_key.expose() == "AKEXAMPLE")
    );
}

#[test]
fn eu_region_uses_eu_domain() {
    assert_eq!(
        dli_endpoint_for("eu-west-101"),
        "https://dli.eu-west-101.myhuaweicloud.eu"
    );
    assert_eq!(
        iam_endpoint_for("cn-north-4"),
        "https://iam.cn-north-4.myhuaweicloud.com"
    );
}

#[test]
fn environment_overrides_file_values() {
    let e = env(&[
        ("DLI_EXPORTER__POLL__INTERVAL", "2m"),
        ("DLI_EXPORTER__POLL__PAGE_SIZE", "50"),
        ("DLI_EXPORTER__METRICS__OWNER_BREAKDOWN", "false"),
        ("DLI_EXPORTER__AUTH__SECRET_KEY", "12345"),
        ("UNRELATED", "x"),
    ]);
    let s = load_toml_str(GOOD, &e).expect("valid");
    assert_eq!(s.poll.interval, Duration::from_secs(120));
    assert_eq!(s.poll.page_size, 50);
    assert!(!s.metrics.owner_breakdown);
    assert!(
        matches!(&s.projects[0].credentials, Credentials::AkSk { secret_key, .. } if secret_key.expose() == "12345")
    );
}

#[test]
fn secrets_fall_back_to_sdk_environment_variables() {
    let text = GOOD.replace(
        "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"\n",
        "",
    );
    let e = env(&[
        ("HUAWEICLOUD_SDK_AK", "envak"),
        ("HUAWEICLOUD_SDK_SK", "envsk"),
        ("HUAWEICLOUD_SDK_SECURITY_TOKEN", "envtok"),
    ]);
    let s = load_toml_str(&text, &e).expect("valid");
    match &s.projects[0].credentials {
        Credentials::AkSk {
            access_key,
            secret_key,
            security_token,
        } => {
            assert_eq!(access_key.expose(), "envak");
            assert_eq!(secret_key.expose(), "envsk");
            assert_eq!(security_token.as_ref().map(Secret::expose), Some("envtok"));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn secrets_from_files_are_trimmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ak = dir.path().join("ak");
    let sk = dir.path().join("sk");
    std::fs::write(&ak, "fileak\n").expect("write");
    std::fs::write(&sk, "filesk\n").expect("write");
    let text = GOOD.replace(
        "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"",
        &format!("access_key_file = {:?}\nsecret_key_file = {:?}", ak, sk),
    );
    let s = load_toml_str(&text, &Env::new()).expect("valid");
    assert!(
        matches!(&s.projects[0].credentials, Credentials::AkSk { access_key, secret_key, .. }
            if access_key.expose() == "fileak" && secret_key.expose() == "filesk")
    );
}

#[test]
fn unreadable_secret_file_names_the_key() {
    let text = GOOD.replace(
        "access_key = \"AKEXAMPLE\"",
        "access_key_file = \"/nonexistent/ak\"",
    );
    assert_eq!(err_keys(&text, &Env::new()), vec!["auth.access_key_file"]);
}

#[test]
fn unknown_keys_are_rejected_with_their_position() {
    let text = GOOD.replace("timeout = \"20s\"", "timeout = \"20s\"\nintervall = \"1m\"");
    let err = load_toml_str(&text, &Env::new()).expect_err("unknown key");
    let msg = err.to_string();
    assert!(msg.contains("intervall") && msg.contains("line 5"), "{msg}");

    let text = GOOD.replace(
        "region = \"cn-north-4\"",
        "region = \"cn-north-4\"\nqueue = \"x\"",
    );
    let msg = load_toml_str(&text, &Env::new())
        .expect_err("unknown key")
        .to_string();
    assert!(msg.contains("`queue`"), "{msg}");
}

#[test]
fn unknown_environment_override_is_rejected() {
    let e = env(&[("DLI_EXPORTER__POLL__INTERVALL", "1m")]);
    let msg = load_toml_str(GOOD, &e)
        .expect_err("unknown key")
        .to_string();
    assert!(msg.contains("intervall"), "{msg}");
}

#[test]
fn empty_queue_list() {
    let text = GOOD.replace("queues = [\"default\", \"etl\"]", "queues = []");
    assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].queues"]);
}

#[test]
fn no_projects() {
    let text = GOOD
        .split("[[projects]]")
        .next()
        .unwrap_or_default()
        .to_string();
    assert_eq!(err_keys(&text, &Env::new()), vec!["projects"]);
}

#[test]
fn duplicate_project_queue_pairs() {
    let text = format!(
        "{GOOD}\n[[projects]]\nproject_id = \"0a1b2c3d4e5f60718293a4b5c6d7e8f9\"\nregion = \"cn-east-3\"\nqueues = [\"etl\"]\n"
    );
    // A second entry for the same project is itself the problem (which credentials would
    // apply?), whatever its queues.
    assert_eq!(err_keys(&text, &Env::new()), vec!["projects[1].project_id"]);
    let text = GOOD.replace("[\"default\", \"etl\"]", "[\"etl\", \"etl\"]");
    assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].queues[1]"]);
}

#[test]
fn timeout_not_below_interval() {
    let text = GOOD.replace("timeout = \"20s\"", "timeout = \"30s\"");
    assert_eq!(err_keys(&text, &Env::new()), vec!["poll.timeout"]);
}

#[test]
fn zero_page_size_and_other_zeroes() {
    let text = GOOD.replace(
        "[poll]",
        "[poll]\npage_size = 0\nmax_pages = 0\nconcurrency = 0",
    );
    assert_eq!(
        err_keys(&text, &Env::new()),
        vec!["poll.page_size", "poll.max_pages", "poll.concurrency"]
    );
}

#[test]
fn malformed_project_id() {
    for bad in ["", "0a1b-2c3d", "x".repeat(65).as_str(), "项目"] {
        let text = GOOD.replace("0a1b2c3d4e5f60718293a4b5c6d7e8f9", bad);
        assert_eq!(
            err_keys(&text, &Env::new()),
            vec!["projects[0].project_id"],
            "{bad:?}"
        );
    }
}

#[test]
fn malformed_endpoint() {
    for bad in [
        "dli.example.com",
        "ftp://dli.example.com",
        "https://",
        "https://h/path",
        "https://h?x=1",
        "https://u:p@h",
    ] {
        let text = GOOD.replace("region = \"cn-north-4\"", &format!("endpoint = {bad:?}"));
        assert_eq!(
            err_keys(&text, &Env::new()),
            vec!["projects[0].endpoint"],
            "{bad:?}"
        );
    }
    let text = GOOD.replace(
        "region = \"cn-north-4\"",
        "endpoint = \"http://127.0.0.1:8080/\"",
    );
    let s = load_toml_str(&text, &Env::new()).expect("http endpoint allowed");
    assert_eq!(s.projects[0].endpoint, "http://127.0.0.1:8080");
}

#[test]
fn missing_region_and_endpoint() {
    let text = GOOD.replace("region = \"cn-north-4\"\n", "");
    assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].region"]);
}

#[test]
fn missing_credentials() {
    let text = GOOD.replace(
        "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"\n",
        "",
    );
    assert_eq!(
        err_keys(&text, &Env::new()),
        vec!["auth.access_key", "auth.secret_key"]
    );
}

#[test]
fn token_auth_requires_its_fields() {
    let text = GOOD.replace(
        "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"",
        "kind = \"token\"",
    );
    assert_eq!(
        err_keys(&text, &Env::new()),
        vec!["auth.domain_name", "auth.user_name", "auth.password"]
    );
    let text = GOOD.replace(
        "access_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"",
        "kind = \"token\"\ndomain_name = \"acct\"\nuser_name = \"bob\"",
    );
    let s = load_toml_str(&text, &env(&[("HUAWEICLOUD_SDK_PASSWORD", "pw")])).expect("valid");
    assert!(
        matches!(&s.projects[0].credentials, Credentials::Token { iam_endpoint, .. }
            if iam_endpoint == "https://iam.cn-north-4.myhuaweicloud.com")
    );
}

#[test]
fn project_auth_replaces_default_whole() {
    let text = format!(
        "{GOOD}\n[projects.auth]\nkind = \"token\"\ndomain_name = \"d\"\nuser_name = \"u\"\npassword = \"p\"\n"
    );
    let s = load_toml_str(&text, &Env::new()).expect("valid");
    assert_eq!(s.projects[0].credentials.kind(), AuthKind::Token);
}

#[test]
fn keys_of_the_other_auth_kind_are_rejected() {
    let text = GOOD.replace("[auth]", "[auth]\nuser_name = \"bob\"");
    assert_eq!(err_keys(&text, &Env::new()), vec!["auth.user_name"]);
}

#[test]
fn bad_listen_address_and_telemetry_path() {
    let text = format!("[web]\nlisten_address = \"10049\"\ntelemetry_path = \"metrics\"\n{GOOD}");
    assert_eq!(
        err_keys(&text, &Env::new()),
        vec!["web.listen_address", "web.telemetry_path"]
    );
    let text = format!("[web]\nlisten_address = \":10049\"\n{GOOD}");
    assert!(load_toml_str(&text, &Env::new()).is_ok());
}

#[test]
fn bad_duration_names_the_key() {
    let text = GOOD.replace("interval = \"30s\"", "interval = \"often\"");
    let msg = load_toml_str(&text, &Env::new())
        .expect_err("bad")
        .to_string();
    assert!(msg.contains("interval"), "{msg}");
}

#[test]
fn debug_never_shows_secrets() {
    let s = load_toml_str(GOOD, &Env::new()).expect("valid");
    let d = format!("{s:?}");
    assert!(!d.contains("AKEXAMPLE") && !d.contains("SKEXAMPLE"), "{d}");
}

#[test]
fn yaml_by_extension() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(
            &path,
            "auth:\n  access_key: a\n  secret_key: b\nprojects:\n  - project_id: abc123\n    region: cn-north-4\n    queues: [q1]\n",
        )
        .expect("write");
    let s = load(&path, &Env::new()).expect("valid yaml");
    assert_eq!(s.projects[0].queues, vec!["q1"]);
    let bad = dir.path().join("c.ini");
    std::fs::write(&bad, "").expect("write");
    assert!(matches!(
        load(&bad, &Env::new()),
        Err(ConfigError::Format { .. })
    ));
}

#[test]
fn yaml_unknown_keys_are_named_with_their_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yml");
    let good = "auth:\n  access_key: a\n  secret_key: SKEXAMPLE\nprojects:\n  - project_id: abc123\n    region: cn-north-4\n    queues: [q1]\n";
    for (text, expect) in [
        (
            good.replace("  secret_key:", "  secret_kye:"),
            "line 3, column 3 (key auth.secret_kye)",
        ),
        (
            format!("{good}    colour: blue\n"),
            "line 8, column 5 (key projects[0].colour)",
        ),
        (
            format!("{good}pol:\n  interval: 1m\n"),
            "line 8, column 1 (key pol)",
        ),
    ] {
        std::fs::write(&path, &text).expect("write");
        let msg = load(&path, &Env::new())
            .expect_err("unknown key")
            .to_string();
        assert!(msg.contains(expect), "{msg}");
        assert!(msg.contains("c.yml"), "{msg}");
        assert!(!msg.contains("SKEXAMPLE"), "{msg}");
    }
    // An unknown key from the environment has no place in the file, and says where to look.
    std::fs::write(&path, good).expect("write");
    let env: Env = [(
        "DLI_EXPORTER__POLL__INTERVALL".to_string(),
        "1m".to_string(),
    )]
    .into_iter()
    .collect();
    let msg = load(&path, &env).expect_err("unknown key").to_string();
    assert!(
        msg.contains("intervall") && msg.contains("environment override"),
        "{msg}"
    );
}

#[test]
fn toml_errors_never_quote_secret_values() {
    let text = GOOD.replace("secret_key = ", "secret_kye = ");
    let msg = load_toml_str(&text, &Env::new())
        .expect_err("unknown key")
        .to_string();
    assert!(
        msg.contains("secret_kye") && msg.contains("line 8"),
        "{msg}"
    );
    assert!(!msg.contains("SKEXAMPLE"), "{msg}");
    let text = GOOD.replace("secret_key = \"SKEXAMPLE\"", "secret_key = \"SKEXAMPLE");
    let msg = load_toml_str(&text, &Env::new())
        .expect_err("unterminated string")
        .to_string();
    assert!(!msg.contains("SKEXAMPLE"), "{msg}");
}

#[test]
fn ca_file_must_hold_a_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").expect("write");
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let missing = dir.path().join("missing.pem");
    for path in [&empty, &garbage, &missing] {
        let text = GOOD.replace(
            "queues = [\"default\", \"etl\"]",
            &format!("queues = [\"default\", \"etl\"]\nca_file = {path:?}"),
        );
        assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].ca_file"]);
        let msg = load_toml_str(&text, &Env::new())
            .expect_err("bad ca_file")
            .to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
}

#[test]
fn proxy_url_is_validated_without_echoing_credentials() {
    let with = |url: &str| {
        GOOD.replace(
            "queues = [\"default\", \"etl\"]",
            &format!("queues = [\"default\", \"etl\"]\nproxy_url = {url:?}"),
        )
    };
    let s = load_toml_str(&with("http://user:pr0xyPass@proxy.corp:3128"), &Env::new())
        .expect("valid proxy");
    let proxy = s.projects[0].proxy.as_ref().expect("proxy set");
    assert_eq!(proxy.redacted(), "http://<redacted>@proxy.corp:3128");
    assert!(!format!("{s:?}").contains("pr0xyPass"));
    assert!(!summary(&s).contains("pr0xyPass"));
    assert!(summary(&s).contains("proxy http://<redacted>@proxy.corp:3128"));
    for bad in [
        "proxy.corp:3128",
        "ftp://u:pr0xyPass@p",
        "http://u:pr0xyPass@p/x",
    ] {
        let text = with(bad);
        assert_eq!(err_keys(&text, &Env::new()), vec!["projects[0].proxy_url"]);
        let msg = load_toml_str(&text, &Env::new())
            .expect_err("bad")
            .to_string();
        assert!(!msg.contains("pr0xyPass"), "{msg}");
    }
    let s = load_toml_str(GOOD, &Env::new()).expect("valid");
    assert!(s.projects[0].proxy.is_none());
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let e = env(&[("HUAWEICLOUD_SDK_AK", "a"), ("HUAWEICLOUD_SDK_SK", "b")]);
    let s = load(&path, &e).unwrap_or_else(|err| panic!("{err}"));
    let defaults = PollConfig::default();
    assert_eq!(s.poll.interval, defaults.interval);
    assert_eq!(s.poll.page_size, defaults.page_size);
}

const AKSK: &str = "[auth]\naccess_key = \"a\"\nsecret_key = \"b\"\n";

#[test]
fn no_queues_key_or_star_discovers_and_names_are_listed_beside_it() {
    let s = load_toml_str(
        &format!("{AKSK}[[projects]]\nproject_id = \"p1\"\nregion = \"cn-north-4\"\n"),
        &Env::new(),
    )
    .expect("valid");
    assert!(s.projects[0].queues.is_empty());
    assert_eq!(s.projects[0].discover, Some(QueueFilter::default()));
    assert_eq!(s.discovery, DiscoveryConfig::default());
    assert_eq!(s.discovery.interval, Duration::from_secs(600));
    assert_eq!(s.discovery.queue_types, vec!["general", "all"]);
    let s = load_toml_str(
        &format!(
            "{AKSK}[discovery]\ninterval = \"2m\"\nqueue_types = [\"general\"]\n[[projects]]\nproject_id = \"p1\"\nregion = \"cn-north-4\"\nqueues = [\"etl\", \"*\"]\ninclude_queues = [\"a.*\"]\nexclude_queues = [\"a_tmp\"]\n"
        ),
        &Env::new(),
    )
    .expect("valid");
    let p = &s.projects[0];
    assert_eq!(p.queues, vec!["etl"]);
    let filter = p.discover.as_ref().expect("discovers");
    assert!(filter.keeps("abc") && !filter.keeps("a_tmp") && !filter.keeps("xa"));
    assert!(
        !filter.keeps("etl"),
        "filters apply to discovered queues only"
    );
    assert_eq!(s.discovery.interval, Duration::from_secs(120));
    assert!(s.discovery.keeps_type("GENERAL") && !s.discovery.keeps_type("all"));
    // The patterns match whole names, as Prometheus relabel regexes do.
    let p = QueuePattern::new("tmp").expect("valid");
    assert!(p.matches("tmp") && !p.matches("tmp_x") && !p.matches("x_tmp"));
    let p = QueuePattern::new("a|b").expect("valid");
    assert!(p.matches("a") && p.matches("b") && !p.matches("ab"));
}

#[test]
fn discovery_rules_name_their_keys() {
    let project = |extra: &str| {
        format!("{AKSK}[[projects]]\nproject_id = \"p1\"\nregion = \"cn-north-4\"\n{extra}")
    };
    assert_eq!(
        err_keys(&project("include_queues = [\"ok\", \"(\"]\n"), &Env::new()),
        vec!["projects[0].include_queues[1]"]
    );
    assert_eq!(
        err_keys(
            &project("queues = [\"etl\"]\nexclude_queues = [\"x\"]\n"),
            &Env::new()
        ),
        vec!["projects[0].exclude_queues"]
    );
    assert_eq!(
        err_keys(&project("queues = [\"*\", \"*\"]\n"), &Env::new()),
        vec!["projects[0].queues[1]"]
    );
    assert_eq!(
        err_keys(
            &format!(
                "[discovery]\ninterval = \"500ms\"\nqueue_types = []\n{}",
                project("")
            ),
            &Env::new()
        ),
        vec!["discovery.interval", "discovery.queue_types"]
    );
    assert_eq!(
        err_keys(
            &format!(
                "[discovery]\nqueue_types = [\"general\", \" \"]\n{}",
                project("")
            ),
            &Env::new()
        ),
        vec!["discovery.queue_types[1]"]
    );
    assert_eq!(
        err_keys(
            &format!("{AKSK}[[projects]]\nendpoint = \"https://dli.example.com\"\n"),
            &Env::new()
        ),
        vec!["projects[0].project_id"]
    );
    // A discovering project is configured in one entry.
    let twice = format!(
        "{}[[projects]]\nproject_id = \"p1\"\nregion = \"cn-east-3\"\nqueues = [\"other\"]\n",
        project("")
    );
    assert_eq!(
        err_keys(&twice, &Env::new()),
        vec!["projects[1].project_id"]
    );
}

#[test]
fn project_id_may_come_from_the_region_and_iam_endpoint_serves_every_kind() {
    let s = load_toml_str(
        &format!("{AKSK}[[projects]]\nregion = \"eu-west-101\"\nqueues = [\"etl\"]\n"),
        &Env::new(),
    )
    .expect("valid");
    let p = &s.projects[0];
    assert!(p.project_id_from_region && !p.has_project_id());
    assert_eq!(
        p.iam_endpoint.as_deref(),
        Some("https://iam.eu-west-101.myhuaweicloud.eu")
    );
    assert!(summary(&s).contains("resolved at start from region eu-west-101"));
    let s = load_toml_str(
        "[auth]\naccess_key = \"a\"\nsecret_key = \"b\"\niam_endpoint = \"http://127.0.0.1:1/\"\n[[projects]]\nregion = \"cn-north-4\"\n",
        &Env::new(),
    )
    .expect("aksk accepts iam_endpoint");
    assert_eq!(
        s.projects[0].iam_endpoint.as_deref(),
        Some("http://127.0.0.1:1")
    );
    let bad = "[auth]\naccess_key = \"a\"\nsecret_key = \"b\"\niam_endpoint = \"iam\"\n[[projects]]\nregion = \"cn-north-4\"\n";
    assert_eq!(err_keys(bad, &Env::new()), vec!["auth.iam_endpoint"]);
    // Once looked up, ids are checked again across entries.
    let mut s = load_toml_str(
        &format!(
            "{AKSK}[[projects]]\nregion = \"cn-north-4\"\nqueues = [\"etl\"]\n[[projects]]\nproject_id = \"p1\"\nregion = \"cn-north-4\"\nqueues = [\"etl\"]\n"
        ),
        &Env::new(),
    )
    .expect("valid before the lookup");
    s.projects[0].project_id = "p1".into();
    let problems = project_id_problems(&s.projects);
    assert_eq!(problems.len(), 1, "{problems:?}");
    // One entry per project: the second names the first and the region it was looked up from.
    assert_eq!(problems[0].key, "projects[1].project_id");
    assert!(
        problems[0].message.contains("projects[0]") && problems[0].message.contains("cn-north-4"),
        "{problems:?}"
    );
}
