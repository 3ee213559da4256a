//! Tests of secrets in the configuration: values from the environment stay the strings they are,
//! and a secret of the wrong type in a file is named, never shown.

use super::tests::{GOOD, env};
use super::*;

#[test]
fn secret_overrides_from_the_environment_stay_the_strings_they_are() {
    for value in ["3.14", "true", "007", "1e3", "-0"] {
        for (var, pick) in [
            ("DLI_EXPORTER__AUTH__SECRET_KEY", 1),
            ("DLI_EXPORTER__AUTH__ACCESS_KEY", 0),
        ] {
            let s = load_toml_str(GOOD, &env(&[(var, value)]))
                .unwrap_or_else(|e| panic!("{var}={value}: {e}"));
            let Credentials::AkSk {
                access_key,
                secret_key,
                ..
            } = &s.projects[0].credentials
            else {
                panic!("aksk");
            };
            let got = [access_key, secret_key][pick].expose();
            assert_eq!(got, value, "{var}");
        }
    }
    // Other overrides are still parsed.
    let s = load_toml_str(GOOD, &env(&[("DLI_EXPORTER__POLL__PAGE_SIZE", "7")])).expect("valid");
    assert_eq!(s.poll.page_size, 7);
}

#[test]
fn a_secret_that_is_not_a_string_in_the_file_is_named_never_shown() {
    for value in ["3.1415926", "true", "271828182845", "[1, 2]", "{ a = 1 }"] {
        let text = GOOD.replace("\"SKEXAMPLE\"", value);
        let msg = match load_toml_str(&text, &Env::new()) {
            Ok(_) => panic!("secret_key = {value} accepted"),
            Err(e) => e.to_string(),
        };
        assert!(msg.contains("secret_key"), "{value}: {msg}");
        assert!(msg.contains("quoted string"), "{value}: {msg}");
        for shown in ["3.1415926", "271828182845", "true"] {
            assert!(!msg.contains(shown), "{value}: {msg}");
        }
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("c.yaml");
    std::fs::write(
        &path,
        "auth:\n  access_key: AK\n  secret_key: 3.1415926\nprojects:\n  - project_id: \"0a1b2c3d4e5f60718293a4b5c6d7e8f9\"\n    region: cn-north-4\n    queues: [etl]\n",
    )
    .expect("write");
    let msg = load(&path, &Env::new()).expect_err("number").to_string();
    assert!(
        msg.contains("secret_key") && !msg.contains("3.1415926"),
        "{msg}"
    );
}
