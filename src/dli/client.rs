//! The ListBatches client of one project: builds the query once, authenticates it (AK/SK
//! signature, IAM token, or a signature with temporary keys), sends it through the
//! [`Transport`] and decodes the page.
//!
//! One call is one page and at most two ListBatches requests (the second only to replace a token
//! or temporary keys DLI rejected), plus whatever fetching credentials takes. It must not retry
//! for other reasons or walk pages: that is [`super::paging`].

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::auth::aksk::{self, AkSkSigner};
use super::auth::keys::MAX_ANSWER_BYTES;
use super::auth::metadata::{METADATA_TIMEOUT, MetadataService};
use super::auth::oidc::OidcExchange;
use super::auth::temporary::{Fetcher, KeySource};
use super::auth::token::{TokenLogin, TokenSource};
use super::error::{DliError, Operation};
use super::http::{ClientBuildError, ClientOptions};
use super::model::{BatchPage, ListBatchesQuery, decode_page};
use super::transport::{RawResponse, RequestObserver, Transport};
use crate::config::{Credentials, Project};

/// How requests of one project are authenticated.
enum Auth {
    AkSk(AkSkSigner),
    Token(Box<TokenSource>),
    /// Temporary keys from the metadata service or the OIDC exchange, signed like AK/SK.
    Temporary(Arc<KeySource>),
}

/// The DLI client of one project.
pub struct DliClient {
    project_id: String,
    endpoint: String,
    /// `host[:port]` as reqwest sends it in `Host`, which is what gets signed.
    host: String,
    /// `/v2.0/{project_id}/batches`, the project id percent-encoded.
    path: String,
    auth: Auth,
    transport: Transport,
}

impl std::fmt::Debug for DliClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DliClient")
            .field("project_id", &self.project_id)
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl DliClient {
    /// Builds the client of `project`; every HTTP request it makes waits for a permit of `limit`
    /// and is reported to `observer`.
    pub fn new(
        project: &Project,
        options: &ClientOptions,
        limit: Arc<Semaphore>,
        observer: Arc<dyn RequestObserver>,
    ) -> Result<Self, ClientBuildError> {
        let project_id = project.project_id.clone();
        let http = super::http::build(project, options)?;
        let transport = Transport::new(
            http,
            observer.clone(),
            limit,
            options.max_body_bytes,
            options.request_timeout,
        )
        .with_throttle(options.throttle);
        let url =
            reqwest::Url::parse(&project.endpoint).map_err(|_| ClientBuildError::Endpoint {
                project_id: project_id.clone(),
                endpoint: project.endpoint.clone(),
            })?;
        let host = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_string(),
            (None, _) => {
                return Err(ClientBuildError::Endpoint {
                    project_id,
                    endpoint: project.endpoint.clone(),
                });
            }
        };
        let auth = match &project.credentials {
            Credentials::AkSk {
                access_key,
                secret_key,
                security_token,
            } => Auth::AkSk(AkSkSigner::new(
                access_key.clone(),
                secret_key.clone(),
                security_token.clone(),
            )),
            Credentials::Token {
                iam_endpoint,
                domain_name,
                user_name,
                password,
            } => Auth::Token(Box::new(TokenSource::new(
                TokenLogin {
                    iam_endpoint: iam_endpoint.clone(),
                    domain_name: domain_name.clone(),
                    user_name: user_name.clone(),
                    password: password.clone(),
                    project_id: project_id.clone(),
                },
                transport.clone(),
            ))),
            Credentials::Metadata { endpoint } => {
                let http = super::http::build_metadata(&project_id, options, METADATA_TIMEOUT)?;
                let metadata_transport = Transport::new(
                    http,
                    observer.clone(),
                    Arc::new(Semaphore::new(1)),
                    MAX_ANSWER_BYTES,
                    METADATA_TIMEOUT.saturating_mul(2),
                );
                Auth::Temporary(Arc::new(KeySource::new(
                    Fetcher::Metadata(MetadataService::new(endpoint, metadata_transport)),
                    &project_id,
                )))
            }
            Credentials::Oidc {
                iam_endpoint,
                idp_id,
                id_token_file,
            } => Auth::Temporary(Arc::new(KeySource::new(
                Fetcher::Oidc(OidcExchange::new(
                    iam_endpoint,
                    idp_id,
                    id_token_file.clone(),
                    transport.clone(),
                )),
                &project_id,
            ))),
        };
        Ok(DliClient {
            path: format!("/v2.0/{}/batches", aksk::encode(&project_id)),
            project_id,
            endpoint: project.endpoint.trim_end_matches('/').to_string(),
            host,
            auth,
            transport,
        })
    }

    pub fn project_id(&self) -> &str {
        &self.project_id
    }

    /// Tokens fetched from IAM, or temporary keys obtained, so far (0 with AK/SK).
    pub fn tokens_fetched(&self) -> u64 {
        match &self.auth {
            Auth::Token(t) => t.tokens_fetched(),
            Auth::Temporary(k) => k.keys_fetched(),
            Auth::AkSk(_) => 0,
        }
    }

    /// One ListBatches request. The query string is built once, sorted and encoded, and sent
    /// exactly as signed.
    pub async fn list_batches(&self, query: &ListBatchesQuery) -> Result<BatchPage, DliError> {
        let canonical_query = aksk::canonical_query(&query.pairs());
        let url = if canonical_query.is_empty() {
            format!("{}{}", self.endpoint, self.path)
        } else {
            format!("{}{}?{}", self.endpoint, self.path, canonical_query)
        };
        match &self.auth {
            Auth::AkSk(signer) => self.signed(signer, &url, &canonical_query).await,
            Auth::Temporary(source) => {
                let signer = source.signer().await?;
                match self.signed(&signer, &url, &canonical_query).await {
                    // Keys DLI no longer accepts (revoked early): new ones, once.
                    Err(e) if e.status() == Some(401) && source.rejected(&signer) => {
                        let signer = source.signer().await?;
                        self.signed(&signer, &url, &canonical_query).await
                    }
                    other => other,
                }
            }
            Auth::Token(source) => {
                let mut retried = false;
                loop {
                    let token = source.token().await?;
                    let request = self
                        .transport
                        .http()
                        .get(&url)
                        .header("Content-Type", "application/json")
                        .header("X-Project-Id", &self.project_id)
                        .header("X-Auth-Token", sensitive_header(token.expose(), &url)?);
                    let result = self
                        .transport
                        .call(Operation::ListBatches, &url, request, |raw| {
                            parse_page(raw, &url)
                        })
                        .await;
                    match result {
                        Err(e) if e.status() == Some(401) && !retried => {
                            // The token was revoked or expired early: fetch a new one, once.
                            source.invalidate(&token);
                            retried = true;
                        }
                        other => return other,
                    }
                }
            }
        }
    }
}

impl DliClient {
    /// One ListBatches request signed with `signer`.
    async fn signed(
        &self,
        signer: &AkSkSigner,
        url: &str,
        canonical_query: &str,
    ) -> Result<BatchPage, DliError> {
        let headers = signer.sign(
            "GET",
            &self.host,
            &self.path,
            canonical_query,
            &self.project_id,
            &aksk::sdk_date(OffsetDateTime::now_utc()),
        );
        let mut request = self.transport.http().get(url);
        for (name, value) in headers {
            if matches!(name, "Authorization" | "X-Security-Token") {
                request = request.header(name, sensitive_header(&value, url)?);
            } else {
                request = request.header(name, value);
            }
        }
        self.transport
            .call(Operation::ListBatches, url, request, |raw| {
                parse_page(raw, url)
            })
            .await
    }
}

/// A credential as a header value marked sensitive, so that the HTTP stack never shows it in
/// `Debug` output. The error does not repeat the value.
fn sensitive_header(value: &str, url: &str) -> Result<reqwest::header::HeaderValue, DliError> {
    let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| DliError::Request {
        operation: Operation::ListBatches,
        url: url.to_string(),
        message: "a credential holds characters that are not allowed in an HTTP header".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn parse_page(raw: RawResponse, url: &str) -> Result<BatchPage, DliError> {
    if !(200..300).contains(&raw.status) {
        return Err(raw.error(Operation::ListBatches, url));
    }
    let page = decode_page(&raw.body).map_err(|e| DliError::Decode {
        operation: Operation::ListBatches,
        url: url.to_string(),
        status: raw.status,
        message: e.to_string(),
        request_id: raw.request_id(),
    })?;
    if page.is_success == Some(false) {
        // A v1-style failure wrapped in a 200: take its code and message as an API error.
        let mut error = raw.error(Operation::ListBatches, url);
        if let DliError::Api { body, .. } = &mut error {
            body.error_code = page.error_code.clone().or(body.error_code.take());
            body.error_msg = page.message.clone().or(body.error_msg.take());
        }
        return Err(error);
    }
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_sensitive_and_errors_do_not_repeat_them() {
        let v = sensitive_header("tok-secret-123", "http://h/p").expect("valid");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("tok-secret-123"));
        let e = sensitive_header("bad\nsecret-456", "http://h/p").expect_err("newline");
        assert!(!e.to_string().contains("secret-456"), "{e}");
        assert!(e.to_string().contains("http://h/p"), "{e}");
    }
}
