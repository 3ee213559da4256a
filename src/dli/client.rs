//! The ListBatches client of one project: builds the query once, authenticates it (AK/SK
//! signature, IAM token, or a signature with temporary keys), sends it through the
//! [`Transport`] and decodes the page.
//!
//! One call is one page and at most two ListBatches requests (the second only to replace a token
//! or temporary keys DLI rejected), plus whatever fetching credentials takes. It must not retry
//! for other reasons or walk pages: that is [`super::walk`].

use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::Semaphore;

use super::auth::aksk::{self, AkSkSigner};
use super::auth::temporary::{Fetcher, KeySource};
use super::auth::token::{TokenLogin, TokenScope, TokenSource};
use super::error::{DliError, MAX_ERROR_CODE, MAX_ERROR_MSG, Operation, bounded_text};
use super::http::{ClientBuildError, ClientOptions};
use super::model::{BatchPage, ListBatchesQuery, PageError, decode_page_at_most};
use super::queues::{QueueList, decode_queue_list};
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
    /// `/v1.0/{project_id}/queues`, the project id percent-encoded.
    queues_path: String,
    auth: Auth,
    transport: Transport,
    /// The server answered a 4xx to ListBatches with `order`: walks ask without it.
    order_rejected: std::sync::atomic::AtomicBool,
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
        if !project.has_project_id() {
            return Err(ClientBuildError::NoProjectId {
                project: project.display_id(),
            });
        }
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
                    scope: TokenScope::ProjectId(project_id.clone()),
                },
                transport.clone(),
            ))),
            Credentials::Metadata { .. } | Credentials::Oidc { .. } => {
                let fetcher = Fetcher::for_credentials(
                    &project.credentials,
                    &project_id,
                    options,
                    &transport,
                    observer.clone(),
                )?
                .ok_or_else(|| ClientBuildError::Http {
                    project_id: project_id.clone(),
                    message: "no fetcher for temporary keys".into(),
                })?;
                Auth::Temporary(Arc::new(KeySource::new(fetcher, &project_id)))
            }
        };
        Ok(DliClient {
            path: format!("/v2.0/{}/batches", aksk::encode(&project_id)),
            queues_path: format!("/v1.0/{}/queues", aksk::encode(&project_id)),
            project_id,
            endpoint: project.endpoint.trim_end_matches('/').to_string(),
            host,
            auth,
            transport,
            order_rejected: Default::default(),
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

    /// True once the server refused ListBatches' `order` parameter.
    pub fn order_rejected(&self) -> bool {
        self.order_rejected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) fn set_order_rejected(&self) {
        self.order_rejected
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// One ListBatches request. The query string is built once, sorted and encoded, and sent
    /// exactly as signed. A page with more jobs than the query's `size` is refused while it is
    /// decoded ([`DliError::OversizedPage`]), so a page never holds more than was asked for.
    pub async fn list_batches(&self, query: &ListBatchesQuery) -> Result<BatchPage, DliError> {
        let asked = query.size;
        self.get(
            Operation::ListBatches,
            &self.path,
            &query.pairs(),
            move |raw, url| parse_page(raw, url, asked),
        )
        .await
    }

    /// One ListQueues request (`GET /v1.0/{project_id}/queues?queue_type=…`), authenticated like
    /// ListBatches. `queue_type` is always sent: the API's default (`sql`) hides Spark queues.
    pub async fn list_queues(&self, queue_type: &str) -> Result<QueueList, DliError> {
        let pairs = [("queue_type", queue_type.to_string())];
        self.get(
            Operation::ListQueues,
            &self.queues_path,
            &pairs,
            parse_queue_list,
        )
        .await
    }

    /// A GET of `path` on the DLI endpoint with `pairs` as its query, signed or carrying the
    /// project's token (fetched again once when DLI answers 401 to it).
    async fn get<T>(
        &self,
        operation: Operation,
        path: &str,
        pairs: &[(&'static str, String)],
        parse: impl Fn(RawResponse, &str) -> Result<T, DliError> + Copy,
    ) -> Result<T, DliError> {
        let canonical_query = aksk::canonical_query(pairs);
        let url = if canonical_query.is_empty() {
            format!("{}{}", self.endpoint, path)
        } else {
            format!("{}{}?{}", self.endpoint, path, canonical_query)
        };
        match &self.auth {
            Auth::AkSk(signer) => {
                self.signed(signer, operation, path, &url, &canonical_query, parse)
                    .await
            }
            Auth::Temporary(source) => {
                let signer = source.signer().await?;
                match self
                    .signed(&signer, operation, path, &url, &canonical_query, parse)
                    .await
                {
                    // Keys DLI no longer accepts (revoked early): new ones, once.
                    Err(e) if e.status() == Some(401) && source.rejected(&signer) => {
                        let signer = source.signer().await?;
                        self.signed(&signer, operation, path, &url, &canonical_query, parse)
                            .await
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
                        .header(
                            "X-Auth-Token",
                            sensitive_header(operation, token.expose(), &url)?,
                        );
                    let result = self
                        .transport
                        .call(operation, &url, request, |raw| parse(raw, &url))
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
    /// One GET of `path` signed with `signer` (AK/SK, or temporary keys with their token).
    async fn signed<T>(
        &self,
        signer: &AkSkSigner,
        operation: Operation,
        path: &str,
        url: &str,
        canonical_query: &str,
        parse: impl Fn(RawResponse, &str) -> Result<T, DliError>,
    ) -> Result<T, DliError> {
        let headers = signer.sign(
            "GET",
            &self.host,
            path,
            canonical_query,
            &self.project_id,
            &aksk::sdk_date(OffsetDateTime::now_utc()),
        );
        let mut request = self.transport.http().get(url);
        for (name, value) in headers {
            if matches!(name, "Authorization" | "X-Security-Token") {
                request = request.header(name, sensitive_header(operation, &value, url)?);
            } else {
                request = request.header(name, value);
            }
        }
        self.transport
            .call(operation, url, request, |raw| parse(raw, url))
            .await
    }
}

/// A credential as a header value marked sensitive, so that the HTTP stack never shows it in
/// `Debug` output. The error does not repeat the value.
pub(super) fn sensitive_header(
    operation: Operation,
    value: &str,
    url: &str,
) -> Result<reqwest::header::HeaderValue, DliError> {
    let mut v = reqwest::header::HeaderValue::from_str(value).map_err(|_| DliError::Request {
        operation,
        url: url.to_string(),
        message: "a credential holds characters that are not allowed in an HTTP header".into(),
    })?;
    v.set_sensitive(true);
    Ok(v)
}

fn parse_queue_list(raw: RawResponse, url: &str) -> Result<QueueList, DliError> {
    if !(200..300).contains(&raw.status) {
        return Err(raw.error(Operation::ListQueues, url));
    }
    let list = decode_queue_list(&raw.body).map_err(|message| DliError::Decode {
        operation: Operation::ListQueues,
        url: url.to_string(),
        status: raw.status,
        message,
        request_id: raw.request_id(),
    })?;
    if list.is_success == Some(false) {
        let mut error = raw.error(Operation::ListQueues, url);
        if let DliError::Api { body, .. } = &mut error {
            body.error_code = list.error_code.clone().or(body.error_code.take());
            body.error_msg = list.message.clone().or(body.error_msg.take());
        }
        return Err(error);
    }
    Ok(list)
}

fn parse_page(raw: RawResponse, url: &str, asked: Option<u32>) -> Result<BatchPage, DliError> {
    if !(200..300).contains(&raw.status) {
        return Err(raw.error(Operation::ListBatches, url));
    }
    let page = decode_page_at_most(&raw.body, asked).map_err(|e| match e {
        PageError::TooManyJobs { asked } => DliError::OversizedPage {
            operation: Operation::ListBatches,
            url: url.to_string(),
            asked,
            status: raw.status,
            request_id: raw.request_id(),
        },
        PageError::Json(e) => DliError::Decode {
            operation: Operation::ListBatches,
            url: url.to_string(),
            status: raw.status,
            message: bounded_text(&e.to_string(), MAX_ERROR_MSG),
            request_id: raw.request_id(),
        },
    })?;
    if page.is_success == Some(false) {
        // A v1-style failure wrapped in a 200: take its code and message as an API error.
        let mut error = raw.error(Operation::ListBatches, url);
        if let DliError::Api { body, .. } = &mut error {
            if let Some(code) = &page.error_code {
                body.error_code = Some(bounded_text(code, MAX_ERROR_CODE));
            }
            if let Some(message) = &page.message {
                body.error_msg = Some(bounded_text(message, MAX_ERROR_MSG));
            }
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
        let v = sensitive_header(Operation::ListBatches, "tok-secret-123", "http://h/p")
            .expect("valid");
        assert!(v.is_sensitive());
        assert!(!format!("{v:?}").contains("tok-secret-123"));
        let e = sensitive_header(Operation::ListBatches, "bad\nsecret-456", "http://h/p")
            .expect_err("newline");
        assert!(!e.to_string().contains("secret-456"), "{e}");
        assert!(e.to_string().contains("http://h/p"), "{e}");
    }
}
