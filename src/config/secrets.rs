//! Secret resolution: each credential from its config value, its `*_file`, or the SDK's
//! environment variable, in that order, into ready-to-use [`Credentials`]. Problems name the key,
//! never the value.

use std::path::PathBuf;

use super::Env;
use super::endpoints::{iam_endpoint_for, is_valid_region, normalize_endpoint};
use super::model::{AuthConfig, AuthKind, Credentials, DEFAULT_METADATA_ENDPOINT};
use crate::secret::Secret;

/// Picks a secret from the config value, the `*_file` path, or an environment variable, in that
/// order; both a value and a file is an error, since it is unclear which one is meant.
fn resolve_secret(
    value: &Option<Secret>,
    file: &Option<PathBuf>,
    env_var: &str,
    key: &str,
    env: &Env,
    problem: &mut impl FnMut(&str, String),
) -> Option<Secret> {
    match (value, file) {
        (Some(_), Some(_)) => {
            problem(key, format!("set either {key} or {key}_file, not both"));
            None
        }
        (Some(v), None) if !v.is_empty() => Some(v.clone()),
        (Some(_), None) => {
            problem(key, "is empty".into());
            None
        }
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(text) => {
                let s = Secret::new(text);
                if s.is_empty() {
                    problem(
                        &format!("{key}_file"),
                        format!("{} is empty", path.display()),
                    );
                    None
                } else {
                    Some(s)
                }
            }
            Err(e) => {
                problem(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", path.display()),
                );
                None
            }
        },
        (None, None) => env.get(env_var).map(Secret::new).filter(|s| !s.is_empty()),
    }
}

/// The IAM endpoint of a project: `iam_endpoint` of its auth table (any kind), else the one of
/// its region; `None` when neither is set or the value is unusable (then reported).
pub(super) fn resolve_iam_endpoint(
    auth: &AuthConfig,
    key: &str,
    region: Option<&str>,
    problem: &mut impl FnMut(&str, String),
) -> Option<String> {
    match (&auth.iam_endpoint, region) {
        (Some(e), _) => match normalize_endpoint(e) {
            Ok(e) => Some(e),
            Err(why) => {
                problem(&format!("{key}.iam_endpoint"), format!("{e:?} {why}"));
                None
            }
        },
        (None, Some(r)) if is_valid_region(r) => Some(iam_endpoint_for(r)),
        (None, _) => None,
    }
}

/// The keys of an auth table that only some kinds use, whether each is set, and those kinds
/// (`iam_endpoint` serves every kind and is not listed).
fn kind_specific_keys(auth: &AuthConfig) -> [(&'static str, bool, &'static [AuthKind]); 9] {
    const AKSK: &[AuthKind] = &[AuthKind::Aksk];
    const TOKEN: &[AuthKind] = &[AuthKind::Token];
    const METADATA: &[AuthKind] = &[AuthKind::Metadata];
    const OIDC: &[AuthKind] = &[AuthKind::Oidc];
    [
        (
            "access_key",
            auth.access_key.is_some() || auth.access_key_file.is_some(),
            AKSK,
        ),
        (
            "secret_key",
            auth.secret_key.is_some() || auth.secret_key_file.is_some(),
            AKSK,
        ),
        (
            "security_token",
            auth.security_token.is_some() || auth.security_token_file.is_some(),
            AKSK,
        ),
        ("domain_name", auth.domain_name.is_some(), TOKEN),
        ("user_name", auth.user_name.is_some(), TOKEN),
        (
            "password",
            auth.password.is_some() || auth.password_file.is_some(),
            TOKEN,
        ),
        (
            "metadata_endpoint",
            auth.metadata_endpoint.is_some(),
            METADATA,
        ),
        ("idp_id", auth.idp_id.is_some(), OIDC),
        ("id_token_file", auth.id_token_file.is_some(), OIDC),
    ]
}

/// An IdP id is sent as the `X-Idp-Id` header: visible ASCII only, at most 256 bytes.
fn is_valid_idp_id(id: &str) -> bool {
    (1..=256).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The credentials of one auth table; `iam_endpoint` is what [`resolve_iam_endpoint`] found
/// (token logins and the OIDC exchange need it).
pub(super) fn resolve_credentials(
    auth: &AuthConfig,
    key: &str,
    iam_endpoint: Option<&str>,
    env: &Env,
    problem: &mut impl FnMut(&str, String),
) -> Option<Credentials> {
    let k = |field: &str| format!("{key}.{field}");
    for (field, set, kinds) in kind_specific_keys(auth) {
        if set && !kinds.contains(&auth.kind) {
            let used_with = kinds
                .iter()
                .map(|kind| format!("kind = \"{}\"", kind.as_str()))
                .collect::<Vec<_>>()
                .join(" or ");
            problem(&k(field), format!("is only used with {used_with}"));
        }
    }
    let mut required_iam_endpoint = || match iam_endpoint {
        Some(e) => Some(e.to_string()),
        None => {
            // A bad value was reported already; only a missing one is reported here.
            if auth.iam_endpoint.is_none() {
                problem(
                    &k("iam_endpoint"),
                    "missing: set iam_endpoint or the project's region".into(),
                );
            }
            None
        }
    };
    match auth.kind {
        AuthKind::Aksk => {
            let ak = resolve_secret(
                &auth.access_key,
                &auth.access_key_file,
                "HUAWEICLOUD_SDK_AK",
                &k("access_key"),
                env,
                problem,
            );
            let sk = resolve_secret(
                &auth.secret_key,
                &auth.secret_key_file,
                "HUAWEICLOUD_SDK_SK",
                &k("secret_key"),
                env,
                problem,
            );
            let token = resolve_secret(
                &auth.security_token,
                &auth.security_token_file,
                "HUAWEICLOUD_SDK_SECURITY_TOKEN",
                &k("security_token"),
                env,
                problem,
            );
            if ak.is_none() && auth.access_key.is_none() && auth.access_key_file.is_none() {
                problem(
                    &k("access_key"),
                    "missing: set access_key, access_key_file or HUAWEICLOUD_SDK_AK".into(),
                );
            }
            if sk.is_none() && auth.secret_key.is_none() && auth.secret_key_file.is_none() {
                problem(
                    &k("secret_key"),
                    "missing: set secret_key, secret_key_file or HUAWEICLOUD_SDK_SK".into(),
                );
            }
            Some(Credentials::AkSk {
                access_key: ak?,
                secret_key: sk?,
                security_token: token,
            })
        }
        AuthKind::Token => {
            let iam_endpoint = required_iam_endpoint();
            let mut required = |v: &Option<String>, field: &str| match v.as_deref().map(str::trim) {
                Some(s) if !s.is_empty() => Some(s.to_string()),
                _ => {
                    problem(&k(field), "missing: required with kind = \"token\"".into());
                    None
                }
            };
            let domain_name = required(&auth.domain_name, "domain_name");
            let user_name = required(&auth.user_name, "user_name");
            let password = resolve_secret(
                &auth.password,
                &auth.password_file,
                "HUAWEICLOUD_SDK_PASSWORD",
                &k("password"),
                env,
                problem,
            );
            if password.is_none() && auth.password.is_none() && auth.password_file.is_none() {
                problem(
                    &k("password"),
                    "missing: set password, password_file or HUAWEICLOUD_SDK_PASSWORD".into(),
                );
            }
            Some(Credentials::Token {
                iam_endpoint: iam_endpoint?,
                domain_name: domain_name?,
                user_name: user_name?,
                password: password?,
            })
        }
        AuthKind::Metadata => {
            let raw = auth
                .metadata_endpoint
                .as_deref()
                .unwrap_or(DEFAULT_METADATA_ENDPOINT);
            match normalize_endpoint(raw) {
                Ok(endpoint) => Some(Credentials::Metadata { endpoint }),
                Err(why) => {
                    problem(&k("metadata_endpoint"), format!("{raw:?} {why}"));
                    None
                }
            }
        }
        AuthKind::Oidc => {
            let iam_endpoint = required_iam_endpoint();
            let idp_id = match auth.idp_id.as_deref().map(str::trim) {
                Some(id) if is_valid_idp_id(id) => Some(id.to_string()),
                Some("") | None => {
                    problem(
                        &k("idp_id"),
                        "missing: required with kind = \"oidc\"".into(),
                    );
                    None
                }
                Some(_) => {
                    problem(
                        &k("idp_id"),
                        "must be the identity provider's id: at most 256 visible ASCII characters"
                            .into(),
                    );
                    None
                }
            };
            let id_token_file = match &auth.id_token_file {
                None => {
                    problem(
                        &k("id_token_file"),
                        "missing: required with kind = \"oidc\" (the projected service account token)"
                            .into(),
                    );
                    None
                }
                // Read once now so that a wrong path fails at start; the content is dropped (and
                // zeroed) at once and read again at each exchange.
                Some(path) => match std::fs::read_to_string(path).map(Secret::new) {
                    Ok(token) if !token.is_empty() => Some(path.clone()),
                    Ok(_) => {
                        problem(&k("id_token_file"), format!("{} is empty", path.display()));
                        None
                    }
                    Err(e) => {
                        problem(
                            &k("id_token_file"),
                            format!("cannot read {}: {e}", path.display()),
                        );
                        None
                    }
                },
            };
            Some(Credentials::Oidc {
                iam_endpoint: iam_endpoint?,
                idp_id: idp_id?,
                id_token_file: id_token_file?,
            })
        }
    }
}
