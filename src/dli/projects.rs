//! The project id of a region (docs/dli-api.md, "Project id from the region"), for `[[projects]]`
//! entries without a `project_id`.
//!
//! With AK/SK: a signed `GET {iam}/v3/projects?name={region}` without `X-Project-Id`, as the
//! official SDK does it (operation `list_projects`); exactly one project of that name must come
//! back; with temporary keys (`metadata`, `oidc`), fetched once for the lookup, the same signed
//! request. With token auth: a password login scoped by project *name* (the region), whose answer
//! names the project id (operation `iam_token`). Nothing here is cached: the lookup runs at start
//! and on each reload. Errors name the region and, when several projects match, their ids.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::auth::aksk::{self, AkSkSigner};
use super::auth::temporary::Fetcher;
use super::auth::token::{TokenLogin, TokenScope, TokenSource};
use super::client::sensitive_header;
use super::error::{DliError, Operation};
use super::http::{ClientBuildError, ClientOptions};
use super::retry::with_retries;
use super::transport::{RawResponse, RequestObserver, Transport};
use super::walk::RetryPolicy;
use crate::config::{Credentials, Project, is_valid_project_id};

/// Why the project id of a region could not be found.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("no region to look the project id up from (set project_id or region)")]
    NoRegion,
    #[error("region {region:?}: no IAM endpoint (set auth.iam_endpoint)")]
    NoIamEndpoint { region: String },
    #[error(transparent)]
    Client(#[from] Box<ClientBuildError>),
    #[error("region {region:?}: looking up the project id failed: {source}")]
    Request {
        region: String,
        source: Box<DliError>,
    },
    #[error(
        "region {region:?}: IAM lists no project named {region:?} ({url}); set project_id, or check the region and the credentials' account"
    )]
    NotFound { region: String, url: String },
    #[error(
        "region {region:?}: IAM lists {} projects named {region:?}: {}; set project_id to the one to poll",
        .ids.len(), .ids.join(", ")
    )]
    Ambiguous { region: String, ids: Vec<String> },
    #[error(
        "region {region:?}: IAM named the project id {id:?}, which is not 1 to 64 ASCII letters and digits"
    )]
    BadId { region: String, id: String },
}

/// Looks up the id of the project named after `project.region`, retrying transient failures as
/// `retry` allows until `deadline`. Requests count toward `limit` and are told to `observer`.
pub async fn lookup_project_id(
    project: &Project,
    options: &ClientOptions,
    limit: Arc<Semaphore>,
    observer: Arc<dyn RequestObserver>,
    retry: &RetryPolicy,
    deadline: Instant,
) -> Result<String, LookupError> {
    let region = project.region.clone().ok_or(LookupError::NoRegion)?;
    let iam = project
        .iam_endpoint
        .clone()
        .ok_or_else(|| LookupError::NoIamEndpoint {
            region: region.clone(),
        })?;
    let http = super::http::build(project, options).map_err(Box::new)?;
    let metadata_observer = observer.clone();
    let transport = Transport::new(
        http,
        observer,
        limit,
        options.max_body_bytes,
        options.request_timeout,
    )
    .with_throttle(options.throttle);
    let request_failed = |source| LookupError::Request {
        region: region.clone(),
        source: Box::new(source),
    };
    let ids = match &project.credentials {
        Credentials::AkSk {
            access_key,
            secret_key,
            security_token,
        } => {
            let signer = AkSkSigner::new(
                access_key.clone(),
                secret_key.clone(),
                security_token.clone(),
            );
            let lookup = IamProjects::new(&iam, &region, &signer, &transport)?;
            with_retries(retry, deadline, || lookup.list())
                .await
                .map_err(request_failed)?
        }
        Credentials::Token {
            iam_endpoint,
            domain_name,
            user_name,
            password,
        } => {
            let source = TokenSource::new(
                TokenLogin {
                    iam_endpoint: iam_endpoint.clone(),
                    domain_name: domain_name.clone(),
                    user_name: user_name.clone(),
                    password: password.clone(),
                    scope: TokenScope::ProjectName(region.clone()),
                },
                transport,
            );
            let id = with_retries(retry, deadline, || source.scoped_project_id())
                .await
                .map_err(request_failed)?;
            vec![id]
        }
        // Temporary keys, fetched once for this lookup, sign it like AK/SK.
        Credentials::Metadata { .. } | Credentials::Oidc { .. } => {
            let project_id = format!("(region {region})");
            let fetcher = Fetcher::for_credentials(
                &project.credentials,
                &project_id,
                options,
                &transport,
                metadata_observer,
            )
            .map_err(Box::new)?
            .ok_or_else(|| {
                LookupError::Client(Box::new(ClientBuildError::Http {
                    project_id: project_id.clone(),
                    message: "this auth kind has no temporary keys".into(),
                }))
            })?;
            let keys = with_retries(retry, deadline, || fetcher.fetch())
                .await
                .map_err(request_failed)?;
            let signer =
                AkSkSigner::new(keys.access_key, keys.secret_key, Some(keys.security_token));
            let lookup = IamProjects::new(&iam, &region, &signer, &transport)?;
            with_retries(retry, deadline, || lookup.list())
                .await
                .map_err(request_failed)?
        }
    };
    match ids.as_slice() {
        [] => Err(LookupError::NotFound {
            url: format!("{iam}/v3/projects?name={}", aksk::encode(&region)),
            region,
        }),
        [id] if is_valid_project_id(id) => Ok(id.clone()),
        [id] => Err(LookupError::BadId {
            region,
            id: id.chars().take(80).collect(),
        }),
        _ => Err(LookupError::Ambiguous {
            region,
            ids: ids.iter().map(|id| id.chars().take(80).collect()).collect(),
        }),
    }
}

/// The signed project list request of one region.
struct IamProjects<'a> {
    url: String,
    host: String,
    query: String,
    region: &'a str,
    signer: &'a AkSkSigner,
    transport: &'a Transport,
}

const PROJECTS_PATH: &str = "/v3/projects";

impl<'a> IamProjects<'a> {
    fn new(
        iam: &str,
        region: &'a str,
        signer: &'a AkSkSigner,
        transport: &'a Transport,
    ) -> Result<Self, LookupError> {
        let bad_endpoint = || LookupError::NoIamEndpoint {
            region: region.to_string(),
        };
        let parsed = reqwest::Url::parse(iam).map_err(|_| bad_endpoint())?;
        let host = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => return Err(bad_endpoint()),
        };
        let query = aksk::canonical_query(&[("name", region)]);
        Ok(IamProjects {
            url: format!("{}{PROJECTS_PATH}?{query}", iam.trim_end_matches('/')),
            host,
            query,
            region,
            signer,
            transport,
        })
    }

    /// One request: the ids of the projects IAM lists under the region's name.
    async fn list(&self) -> Result<Vec<String>, DliError> {
        let headers = self.signer.sign_for(
            "GET",
            &self.host,
            PROJECTS_PATH,
            &self.query,
            None,
            &aksk::sdk_date(OffsetDateTime::now_utc()),
        );
        let mut request = self.transport.http().get(&self.url);
        for (name, value) in headers {
            if matches!(name, "Authorization" | "X-Security-Token") {
                request = request.header(
                    name,
                    sensitive_header(Operation::ListProjects, &value, &self.url)?,
                );
            } else {
                request = request.header(name, value);
            }
        }
        let url = self.url.clone();
        let region = self.region;
        self.transport
            .call(Operation::ListProjects, &self.url, request, |raw| {
                parse_projects(raw, &url, region)
            })
            .await
    }
}

/// The ids of the listed projects named `region` (an entry without a name counts: IAM filtered
/// by name already; one with another name does not, in case the filter was ignored), each once.
fn parse_projects(raw: RawResponse, url: &str, region: &str) -> Result<Vec<String>, DliError> {
    if !(200..300).contains(&raw.status) {
        return Err(raw.error(Operation::ListProjects, url));
    }
    let decode = |message: &str| DliError::Decode {
        operation: Operation::ListProjects,
        url: url.to_string(),
        status: raw.status,
        message: message.to_string(),
        request_id: raw.request_id(),
    };
    let body: Value =
        serde_json::from_slice(&raw.body).map_err(|_| decode("the project list is not JSON"))?;
    let projects = body
        .get("projects")
        .and_then(Value::as_array)
        .ok_or_else(|| decode("the project list has no \"projects\" array"))?;
    let mut ids: Vec<String> = Vec::new();
    for p in projects {
        let name = p.get("name").and_then(Value::as_str);
        if name.is_some_and(|n| n != region) {
            continue;
        }
        if let Some(id) = p.get("id").and_then(Value::as_str)
            && !ids.iter().any(|x| x == id)
        {
            ids.push(id.to_string());
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(status: u16, body: &str) -> RawResponse {
        RawResponse {
            status,
            headers: reqwest::header::HeaderMap::new(),
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    #[test]
    fn keeps_the_projects_of_that_name_once() {
        let ids = parse_projects(
            raw(
                200,
                r#"{"projects":[{"id":"a1","name":"cn-north-4"},{"id":"b2","name":"cn-north-4_sub"},
                   {"id":"a1","name":"cn-north-4"},{"id":"c3"},{"name":"cn-north-4"},{"id":5}],"links":{}}"#,
            ),
            "u",
            "cn-north-4",
        )
        .expect("parses");
        assert_eq!(ids, vec!["a1", "c3"]);
        assert!(
            parse_projects(raw(200, r#"{"projects":[]}"#), "u", "r")
                .expect("parses")
                .is_empty()
        );
    }

    #[test]
    fn unusable_answers_are_errors() {
        assert!(parse_projects(raw(200, "{}"), "u", "r").is_err());
        assert!(parse_projects(raw(200, "nope"), "u", "r").is_err());
        let e = parse_projects(
            raw(403, r#"{"error":{"code":403,"message":"no"}}"#),
            "u",
            "r",
        )
        .expect_err("403");
        assert_eq!(e.operation(), Operation::ListProjects);
        assert_eq!(e.reason(), crate::dli::FailureReason::Auth);
    }
}
