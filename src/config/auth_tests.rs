//! Tests of the keyless auth kinds' keys (`metadata`, `oidc`) and of `iam_endpoint` for every
//! kind: each rule, each error naming its key, nothing secret read into the settings.

use super::tests::{GOOD, env, err_keys};
use super::*;

/// `GOOD` with its `[auth]` table replaced by `auth`.
fn with_auth(auth: &str) -> String {
    GOOD.replace(
        "[auth]\naccess_key = \"AKEXAMPLE\"\nsecret_key = \"SKEXAMPLE\"",
        &format!("[auth]\n{auth}"),
    )
}

#[test]
fn metadata_auth_needs_no_secret_and_defaults_to_the_link_local_service() {
    // The SDK's AK/SK variables are not consulted for this kind.
    let e = env(&[("HUAWEICLOUD_SDK_AK", "ak")]);
    let s = load_toml_str(&with_auth("kind = \"metadata\""), &e).expect("valid");
    assert_eq!(
        s.projects[0].credentials,
        Credentials::Metadata {
            endpoint: DEFAULT_METADATA_ENDPOINT.into()
        }
    );
    let s = load_toml_str(
        &with_auth("kind = \"metadata\"\nmetadata_endpoint = \"http://127.0.0.1:8080/\"\niam_endpoint = \"http://127.0.0.1:9\""),
        &e,
    )
    .expect("valid");
    assert_eq!(
        s.projects[0].credentials,
        Credentials::Metadata {
            endpoint: "http://127.0.0.1:8080".into()
        }
    );
    assert!(summary(&s).contains("metadata service http://127.0.0.1:8080"));
    assert_eq!(
        err_keys(
            &with_auth("kind = \"metadata\"\nmetadata_endpoint = \"169.254.169.254\""),
            &e
        ),
        vec!["auth.metadata_endpoint"]
    );
    assert_eq!(
        err_keys(
            &with_auth("kind = \"metadata\"\naccess_key = \"AK\"\npassword = \"pw\""),
            &e
        ),
        vec!["auth.access_key", "auth.password"]
    );
}

#[test]
fn oidc_auth_reads_nothing_secret_into_the_settings() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "eyJ.id-token-secret-value.sig\n").expect("write");
    let auth = format!(
        "kind = \"oidc\"\nidp_id = \"cce-idp\"\nid_token_file = {:?}",
        file.display().to_string()
    );
    let s = load_toml_str(&with_auth(&auth), &Env::new()).expect("valid");
    assert_eq!(
        s.projects[0].credentials,
        Credentials::Oidc {
            iam_endpoint: "https://iam.cn-north-4.myhuaweicloud.com".into(),
            idp_id: "cce-idp".into(),
            id_token_file: file.clone(),
        }
    );
    let shown = format!("{s:?}{}", summary(&s));
    assert!(!shown.contains("id-token-secret-value"), "{shown}");
    assert!(shown.contains("cce-idp"), "{shown}");

    assert_eq!(
        err_keys(&with_auth("kind = \"oidc\""), &Env::new()),
        vec!["auth.idp_id", "auth.id_token_file"]
    );
    let no_region = with_auth(&auth).replace(
        "region = \"cn-north-4\"",
        "endpoint = \"http://127.0.0.1:1\"",
    );
    assert_eq!(err_keys(&no_region, &Env::new()), vec!["auth.iam_endpoint"]);
    let missing = with_auth(&auth.replace("token\"", "absent\""));
    assert_eq!(err_keys(&missing, &Env::new()), vec!["auth.id_token_file"]);
    std::fs::write(&file, " \n").expect("write");
    assert_eq!(
        err_keys(&with_auth(&auth), &Env::new()),
        vec!["auth.id_token_file"]
    );
    std::fs::write(&file, "tok").expect("write");
    let bad_idp = auth.replace("cce-idp", "cce idp");
    assert_eq!(
        err_keys(&with_auth(&bad_idp), &Env::new()),
        vec!["auth.idp_id"]
    );
    assert_eq!(
        err_keys(
            &with_auth(&format!("{auth}\nsecret_key = \"SK\"")),
            &Env::new()
        ),
        vec!["auth.secret_key"]
    );
}

#[test]
fn iam_endpoint_is_accepted_for_every_kind_and_keys_of_keyless_kinds_are_not() {
    let s = load_toml_str(
        &GOOD.replace("[auth]", "[auth]\niam_endpoint = \"http://127.0.0.1:9\""),
        &Env::new(),
    )
    .expect("iam_endpoint with aksk");
    assert_eq!(s.projects[0].credentials.kind(), AuthKind::Aksk);
    let text = GOOD.replace(
        "[auth]",
        "[auth]\nmetadata_endpoint = \"http://127.0.0.1:1\"\nidp_id = \"x\"",
    );
    let e = load_toml_str(&text, &Env::new()).expect_err("keyless keys with aksk");
    assert_eq!(e.keys(), vec!["auth.metadata_endpoint", "auth.idp_id"]);
    assert!(
        e.to_string().contains("only used with kind = \"metadata\""),
        "{e}"
    );
}
