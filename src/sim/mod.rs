//! The embedded DLI simulator: an in-process look-alike of DLI's ListBatches API and IAM's token
//! endpoint, served over real loopback HTTP. Used by `--demo`, the integration tests and the
//! benchmarks.
//!
//! It owns: a hyper 1.x server on a caller-supplied or loopback listener; an in-memory job list
//! per project × queue; verification of SDK-HMAC-SHA256 signatures and IAM tokens it issued;
//! scripted misbehaviour ([`FaultRule`]); counters and a request log for tests to assert on; and a
//! "lively" world whose jobs move through states over time.
//!
//! It must not: reach any network other than the listener it is given, read credentials from the
//! environment, panic on anything that arrives from the network (bad input gets a 4xx), or keep
//! serving after [`Simulator::shutdown`]. Everything random (ids, owners, times, jitter, request
//! ids, tokens) comes from [`SimConfig::seed`]; only wall-clock time differs between two runs.
//!
//! Layout: `mod.rs` (this handle and its configuration), `server.rs` (hyper plumbing and routing),
//! `jobs.rs` ([`SimJob`] and seeded generation), `faults.rs` ([`FaultRule`], [`Fault`] and matching),
//! `auth.rs` (signature and token checks, the IAM token endpoint), `queues.rs` (the queue list and
//! the IAM project list), `listing.rs` (how a queue's list is served: [`QueueBehaviour`] and the
//! page window), `keyless.rs` (the metadata service and the OIDC exchange, issuing
//! short-lived temporary keys), `respond.rs` (responses, error bodies, faults), `lively.rs` (the lively
//! world that `--demo` polls).

mod auth;
mod faults;
mod jobs;
mod keyless;
mod listing;
mod lively;
mod queues;
mod respond;
mod server;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::sync::CancellationToken;

use crate::secret::Secret;

pub use faults::{Fault, FaultRule, SimApi};
pub use jobs::{JOB_STATES, SimJob};
pub use keyless::{DEMO_ID_TOKEN, DEMO_IDP_ID, NO_AGENCY_MESSAGE, Outage, Service};
pub use listing::{ListOrder, ParamHandling, QueueBehaviour};
pub use lively::{
    DEMO_SQL_QUEUES, LIVELY_FLAKY_JOB, LIVELY_MAX_JOBS, LIVELY_OWNERS, LIVELY_RECURRING_JOBS,
    LivelyWorld, demo_queue_list, start_lively, start_lively_with,
};
pub use queues::SimQueue;

/// Access key accepted by [`SimConfig::default`].
pub const DEMO_ACCESS_KEY: &str = "DLIDEMOACCESSKEY0001";
/// Secret key that goes with [`DEMO_ACCESS_KEY`].
pub const DEMO_SECRET_KEY: &str = "dliDemoSecretKey000000000000000000000000";
/// IAM account (domain) name accepted by [`SimConfig::default`].
pub const DEMO_DOMAIN: &str = "demo_account";
/// IAM user name accepted by [`SimConfig::default`].
pub const DEMO_USER: &str = "demo_user";
/// IAM password of [`DEMO_USER`].
pub const DEMO_PASSWORD: &str = "demo-password";
/// The project the lively world fills (and the simulator's default project).
pub const DEMO_PROJECT_ID: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// The queues the lively world fills.
pub const DEMO_QUEUES: [&str; 2] = ["etl", "adhoc"];
/// The region name that a token request scoped by project *name* resolves to [`DEMO_PROJECT_ID`]
/// (any other name can be mapped with [`Simulator::map_project_name`]).
pub const DEMO_REGION: &str = "cn-north-4";

/// The request log keeps at most this many entries (the oldest are dropped), so a long benchmark
/// does not grow it without bound.
pub const REQUEST_LOG_CAPACITY: usize = 100_000;

/// A password login accepted by the fake IAM `POST /v3/auth/tokens`.
#[derive(Clone, Debug)]
pub struct IamUser {
    pub domain: String,
    pub user: String,
    pub password: Secret,
}

/// What the `total` field of a ListBatches response means.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TotalMode {
    /// Livy's meaning: the number of jobs matching the filter (all pages together).
    Full,
    /// `total` is the length of the returned `sessions` array.
    PageLength,
    /// `total` is always this number.
    Fixed(i64),
    /// No `total` field at all.
    Absent,
}

/// How a simulator behaves. Build with struct update syntax over [`SimConfig::default`].
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds every random choice: same seed => same ids, owners, time offsets, request ids, tokens.
    pub seed: u64,
    /// Accepted AK -> SK pairs for SDK-HMAC-SHA256 signatures.
    pub credentials: Vec<(String, Secret)>,
    /// Accepted password logins for `POST /v3/auth/tokens`.
    pub iam_users: Vec<IamUser>,
    /// How long an issued token is valid.
    pub token_lifetime: Duration,
    /// The server silently caps `size` to this (None = no cap).
    pub max_page_size: Option<usize>,
    /// What `total` means in responses.
    pub total_mode: TotalMode,
    /// An `X-Sdk-Date` further than this from the server clock is rejected with 401 APIGW.0303.
    pub max_clock_skew: Duration,
    /// How long temporary keys from the metadata service or the OIDC exchange are valid (the
    /// OIDC exchange gives the smaller of this and the `duration_seconds` asked for).
    pub temporary_key_lifetime: Duration,
    /// The metadata service hands out session tokens; when false, `PUT
    /// /meta-data/latest/api/token` answers 404 (a service without them).
    pub metadata_session_tokens: bool,
    /// With session tokens on: `GET /openstack/latest/securitykey` without one answers 401.
    pub metadata_requires_session_token: bool,
    /// The instance has an agency; when false the keys request answers 401 with
    /// [`NO_AGENCY_MESSAGE`].
    pub agency: bool,
    /// The identity provider id the OIDC exchange accepts in `X-Idp-Id`.
    pub oidc_idp_id: String,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 42,
            credentials: vec![(DEMO_ACCESS_KEY.to_string(), Secret::new(DEMO_SECRET_KEY))],
            iam_users: vec![IamUser {
                domain: DEMO_DOMAIN.to_string(),
                user: DEMO_USER.to_string(),
                password: Secret::new(DEMO_PASSWORD),
            }],
            token_lifetime: Duration::from_secs(24 * 3600),
            max_page_size: None,
            total_mode: TotalMode::Full,
            max_clock_skew: Duration::from_secs(15 * 60),
            temporary_key_lifetime: Duration::from_secs(3600),
            metadata_session_tokens: true,
            metadata_requires_session_token: false,
            agency: true,
            oidc_idp_id: DEMO_IDP_ID.to_string(),
        }
    }
}

/// Counters since start (or the last [`Simulator::reset_stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Every request to `/v2.0/{project_id}/batches`, whatever its outcome.
    pub list_batches_requests: u64,
    /// Bytes of the ListBatches pages answered with 200 (bodies only).
    pub list_batches_bytes: u64,
    /// Every request to `POST /v3/auth/tokens`, whatever its outcome.
    pub iam_token_requests: u64,
    /// Tokens handed out (201 answers).
    pub tokens_issued: u64,
    /// ListBatches requests answered 401 because of missing, bad or expired credentials.
    pub auth_rejections: u64,
    /// Fault actions applied (each rule application counts once, terminal or not).
    pub faults_injected: u64,
    /// Every request to `/v1.0/{project_id}/queues`, whatever its outcome.
    pub list_queues_requests: u64,
    /// Every request to `GET /v3/projects`, whatever its outcome.
    pub list_projects_requests: u64,
    /// `PUT /meta-data/latest/api/token` requests, whatever their outcome.
    pub metadata_token_requests: u64,
    /// `GET /openstack/latest/securitykey` requests, whatever their outcome.
    pub metadata_key_requests: u64,
    /// Requests to either step of the OIDC exchange, whatever their outcome.
    pub oidc_requests: u64,
    /// Temporary keys handed out (metadata service and OIDC exchange).
    pub temporary_keys_issued: u64,
    /// Requests refused because their temporary keys had expired.
    pub expired_key_rejections: u64,
}

/// One ListBatches request as the simulator saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedRequest {
    /// Project id from the path, percent-decoded.
    pub project_id: String,
    /// `queue_name`, else `cluster_name`; None when the request had neither.
    pub queue: Option<String>,
    /// `from` as sent (0 when absent, -1 when not an integer).
    pub from: i64,
    /// `size` as sent, before any `max_page_size` cap (100 when absent, -1 when not an integer).
    pub size: i64,
    /// HTTP status answered; 0 when no response was sent (Hang, ResetConnection).
    pub status: u16,
    /// `"aksk"` (an `Authorization` header), `"token"` (`X-Auth-Token`) or `"none"`; the kind of
    /// credentials presented, whether or not they were valid.
    pub auth: &'static str,
    /// Number of jobs in the answered `sessions` array (0 for errors).
    pub sessions: usize,
    /// The raw query string as received.
    pub query: String,
}

/// Jobs of one queue, index 0 served first. `Arc` so that a page is a handful of refcount bumps,
/// never a copy of the queue.
pub(crate) type QueueJobs = VecDeque<Arc<SimJob>>;

#[derive(Default)]
pub(crate) struct Counters {
    list_batches_requests: AtomicU64,
    list_batches_bytes: AtomicU64,
    iam_token_requests: AtomicU64,
    tokens_issued: AtomicU64,
    auth_rejections: AtomicU64,
    faults_injected: AtomicU64,
    list_queues_requests: AtomicU64,
    list_projects_requests: AtomicU64,
}

impl Counters {
    fn snapshot(&self, keyless: &keyless::KeylessCounters) -> SimStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        SimStats {
            metadata_token_requests: get(&keyless.session_token_requests),
            metadata_key_requests: get(&keyless.security_key_requests),
            oidc_requests: get(&keyless.oidc_requests),
            temporary_keys_issued: get(&keyless.keys_issued),
            expired_key_rejections: get(&keyless.expired_key_rejections),
            list_batches_requests: self.list_batches_requests.load(Ordering::Relaxed),
            list_batches_bytes: self.list_batches_bytes.load(Ordering::Relaxed),
            iam_token_requests: self.iam_token_requests.load(Ordering::Relaxed),
            tokens_issued: self.tokens_issued.load(Ordering::Relaxed),
            auth_rejections: self.auth_rejections.load(Ordering::Relaxed),
            faults_injected: self.faults_injected.load(Ordering::Relaxed),
            list_queues_requests: self.list_queues_requests.load(Ordering::Relaxed),
            list_projects_requests: self.list_projects_requests.load(Ordering::Relaxed),
        }
    }

    fn reset(&self, keyless: &keyless::KeylessCounters) {
        for c in [
            &self.list_batches_requests,
            &self.list_batches_bytes,
            &self.iam_token_requests,
            &self.tokens_issued,
            &self.auth_rejections,
            &self.faults_injected,
            &self.list_queues_requests,
            &self.list_projects_requests,
            &keyless.session_token_requests,
            &keyless.security_key_requests,
            &keyless.oidc_requests,
            &keyless.keys_issued,
            &keyless.expired_key_rejections,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Locks a mutex, ignoring poisoning: simulator state stays usable after a panicking test thread.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Wall-clock now in unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    let now = time::OffsetDateTime::now_utc();
    i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// Shared state behind every [`Simulator`] handle.
pub(crate) struct Inner {
    pub(crate) config: SimConfig,
    pub(crate) addr: SocketAddr,
    pub(crate) cancel: CancellationToken,
    /// project id -> queue -> jobs.
    pub(crate) projects: Mutex<BTreeMap<String, BTreeMap<String, QueueJobs>>>,
    pub(crate) faults: Mutex<Vec<faults::FaultSlot>>,
    /// (project id, queue) -> how that queue is served; absent: the default behaviour.
    pub(crate) behaviours: Mutex<BTreeMap<(String, String), QueueBehaviour>>,
    pub(crate) tokens: Mutex<HashMap<String, auth::IssuedToken>>,
    /// IAM projects as (name, id), for token requests scoped by name and the project list; a
    /// name may be listed more than once.
    pub(crate) project_names: Mutex<Vec<(String, String)>>,
    /// project id -> the queue list (queue objects as served).
    pub(crate) queue_lists: Mutex<BTreeMap<String, Vec<serde_json::Value>>>,
    /// Raw query strings of the queue list requests, oldest first.
    pub(crate) queue_list_queries: Mutex<VecDeque<String>>,
    /// Job generation (generate_jobs, InsertFront): its own stream, so that the number of requests
    /// served does not change which jobs are generated.
    pub(crate) job_rng: Mutex<StdRng>,
    /// Request ids and tokens.
    pub(crate) misc_rng: Mutex<StdRng>,
    pub(crate) counters: Counters,
    pub(crate) log: Mutex<VecDeque<LoggedRequest>>,
    /// Metadata service and OIDC exchange: issued tokens and keys, outages.
    pub(crate) keyless: keyless::KeylessState,
}

impl Inner {
    pub(crate) fn log_request(&self, entry: LoggedRequest) {
        let mut log = lock(&self.log);
        if log.len() >= REQUEST_LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(entry);
    }

    pub(crate) fn request_id(&self) -> String {
        use rand::Rng;
        let bytes: [u8; 16] = lock(&self.misc_rng).random();
        hex::encode(bytes)
    }
}

/// `n` jobs for `queue` from a generator seeded with `seed`, without a running simulator (for
/// benchmarks that need realistic pages offline); same as [`Simulator::generate_jobs_at`] on a
/// fresh simulator with that seed.
pub fn generate_jobs_seeded(
    seed: u64,
    n: usize,
    queue: &str,
    realistic: bool,
    now_ms: i64,
) -> Vec<SimJob> {
    jobs::generate(
        &mut StdRng::seed_from_u64(seed),
        n,
        queue,
        realistic,
        now_ms,
    )
}

/// The JSON body of a ListBatches answer holding `jobs`, as the simulator serves it.
pub fn page_body(from: i64, total: i64, jobs: &[SimJob]) -> Vec<u8> {
    let page: Vec<Arc<SimJob>> = jobs.iter().cloned().map(Arc::new).collect();
    server::page_json(from, Some(total), &page)
}

/// A running simulator. Cheap to clone; every clone controls the same server.
#[derive(Clone)]
pub struct Simulator {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Simulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Simulator")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

impl Simulator {
    /// Starts a simulator on `127.0.0.1:0`.
    pub async fn start(config: SimConfig) -> std::io::Result<Simulator> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        Self::start_on(listener, config).await
    }

    /// Starts a simulator on an already bound listener.
    pub async fn start_on(
        listener: tokio::net::TcpListener,
        config: SimConfig,
    ) -> std::io::Result<Simulator> {
        let addr = listener.local_addr()?;
        let seed = config.seed;
        let project_names = vec![(DEMO_REGION.to_string(), DEMO_PROJECT_ID.to_string())];
        let inner = Arc::new(Inner {
            config,
            addr,
            cancel: CancellationToken::new(),
            projects: Mutex::new(BTreeMap::new()),
            faults: Mutex::new(Vec::new()),
            behaviours: Mutex::new(BTreeMap::new()),
            tokens: Mutex::new(HashMap::new()),
            project_names: Mutex::new(project_names),
            queue_lists: Mutex::new(BTreeMap::new()),
            queue_list_queries: Mutex::new(VecDeque::new()),
            job_rng: Mutex::new(StdRng::seed_from_u64(seed)),
            misc_rng: Mutex::new(StdRng::seed_from_u64(seed ^ 0x9e37_79b9_7f4a_7c15)),
            counters: Counters::default(),
            log: Mutex::new(VecDeque::new()),
            keyless: keyless::KeylessState::default(),
        });
        server::spawn(listener, inner.clone());
        Ok(Simulator { inner })
    }

    /// Starts the lively world (see [`start_lively`]).
    pub async fn start_lively(tick: Duration) -> std::io::Result<Simulator> {
        start_lively(tick).await
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`: the endpoint for both DLI and IAM.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The configuration the simulator runs with.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// How one queue is served from now on: list order, which parameters are honoured, a
    /// `size` cap, what `total` means, whether `from` is read (see [`QueueBehaviour`]).
    pub fn set_behaviour(&self, project_id: &str, queue: &str, behaviour: QueueBehaviour) {
        lock(&self.inner.behaviours).insert((project_id.to_string(), queue.to_string()), behaviour);
    }

    /// How one queue is served (the default until [`Simulator::set_behaviour`]).
    pub fn behaviour(&self, project_id: &str, queue: &str) -> QueueBehaviour {
        listing::behaviour_of(&self.inner, project_id, Some(queue))
    }

    /// Replaces the jobs of one queue, stored in this order (index 0 first): newest first by
    /// convention, and served so under the default [`ListOrder::NewestFirst`].
    pub fn set_jobs(&self, project_id: &str, queue: &str, jobs: Vec<SimJob>) {
        let mut projects = lock(&self.inner.projects);
        let q = projects
            .entry(project_id.to_string())
            .or_default()
            .entry(queue.to_string())
            .or_default();
        *q = jobs.into_iter().map(Arc::new).collect();
    }

    /// Puts jobs in front of a queue (as newly submitted jobs appear in a newest-first list);
    /// `jobs[0]` becomes the first job served.
    pub fn insert_front(&self, project_id: &str, queue: &str, jobs: Vec<SimJob>) {
        let mut projects = lock(&self.inner.projects);
        let q = projects
            .entry(project_id.to_string())
            .or_default()
            .entry(queue.to_string())
            .or_default();
        for job in jobs.into_iter().rev() {
            q.push_front(Arc::new(job));
        }
    }

    /// A copy of one queue's jobs, in serving order.
    pub fn jobs(&self, project_id: &str, queue: &str) -> Vec<SimJob> {
        let projects = lock(&self.inner.projects);
        projects
            .get(project_id)
            .and_then(|p| p.get(queue))
            .map(|q| q.iter().map(|j| SimJob::clone(j)).collect())
            .unwrap_or_default()
    }

    /// Changes one job in place; false when no job of that queue has this id.
    pub fn update_job(
        &self,
        project_id: &str,
        queue: &str,
        id: &str,
        f: impl FnOnce(&mut SimJob),
    ) -> bool {
        let mut projects = lock(&self.inner.projects);
        let Some(q) = projects.get_mut(project_id).and_then(|p| p.get_mut(queue)) else {
            return false;
        };
        match q.iter_mut().find(|j| j.id == id) {
            Some(job) => {
                f(Arc::make_mut(job));
                true
            }
            None => false,
        }
    }

    /// Removes a job; false when no job of that queue has this id.
    pub fn remove_job(&self, project_id: &str, queue: &str, id: &str) -> bool {
        let mut projects = lock(&self.inner.projects);
        let Some(q) = projects.get_mut(project_id).and_then(|p| p.get_mut(queue)) else {
            return false;
        };
        let before = q.len();
        q.retain(|j| j.id != id);
        q.len() != before
    }

    /// `n` seeded jobs for `queue`, newest first, with varied states and owners (about 3% have
    /// no owner). Times are relative to the wall clock now; see [`Simulator::generate_jobs_at`]
    /// for a fixed clock. `realistic`: every one of the 16 fields, 10 log lines and a 1–2 KB
    /// `req_body`, as a benchmark wants them. Ids are UUID-shaped.
    pub fn generate_jobs(&self, n: usize, queue: &str, realistic: bool) -> Vec<SimJob> {
        self.generate_jobs_at(n, queue, realistic, now_ms())
    }

    /// [`Simulator::generate_jobs`] with "now" given in unix ms, so that two simulators with the
    /// same seed produce identical jobs.
    pub fn generate_jobs_at(
        &self,
        n: usize,
        queue: &str,
        realistic: bool,
        now_ms: i64,
    ) -> Vec<SimJob> {
        let mut rng = lock(&self.inner.job_rng);
        jobs::generate(&mut rng, n, queue, realistic, now_ms)
    }

    /// Adds a fault rule; rules are consulted in the order they were added.
    pub fn add_fault(&self, rule: FaultRule) {
        lock(&self.inner.faults).push(faults::FaultSlot::new(rule));
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        lock(&self.inner.faults).clear();
    }

    /// Every token issued so far is now rejected with 401, as if it had expired server-side.
    pub fn expire_tokens(&self) {
        lock(&self.inner.tokens).clear();
    }

    /// Every token issued and not expired with [`Simulator::expire_tokens`], as secrets: for
    /// tests that check no token ever shows up in logs or metrics.
    pub fn issued_tokens(&self) -> Vec<Secret> {
        lock(&self.inner.tokens).keys().map(Secret::new).collect()
    }

    /// IAM's project `name` (a region id) is this project id, and only this one: token requests
    /// scoped by that name get it, the project list lists it.
    pub fn map_project_name(&self, name: &str, project_id: &str) {
        let mut names = lock(&self.inner.project_names);
        names.retain(|(n, _)| n != name);
        names.push((name.to_string(), project_id.to_string()));
    }

    /// Adds one more project of this `name` (so the project list shows several).
    pub fn add_iam_project(&self, name: &str, project_id: &str) {
        lock(&self.inner.project_names).push((name.to_string(), project_id.to_string()));
    }

    /// Removes every project of this `name` from IAM.
    pub fn remove_iam_projects(&self, name: &str) {
        lock(&self.inner.project_names).retain(|(n, _)| n != name);
    }

    /// Counters since start or the last [`Simulator::reset_stats`].
    pub fn stats(&self) -> SimStats {
        self.inner.counters.snapshot(&self.inner.keyless.counters)
    }

    /// Every ListBatches request so far (the last [`REQUEST_LOG_CAPACITY`]), oldest first.
    pub fn request_log(&self) -> Vec<LoggedRequest> {
        lock(&self.inner.log).iter().cloned().collect()
    }

    /// Zeroes the counters and empties the request logs.
    pub fn reset_stats(&self) {
        self.inner.counters.reset(&self.inner.keyless.counters);
        lock(&self.inner.log).clear();
        lock(&self.inner.queue_list_queries).clear();
    }

    /// Stops accepting connections and ends every open one, hung ones included. Idempotent.
    pub fn shutdown(&self) {
        self.inner.cancel.cancel();
    }

    /// True once [`Simulator::shutdown`] was called.
    pub fn is_shut_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }

    /// Resolves when [`Simulator::shutdown`] is called.
    pub async fn stopped(&self) {
        self.inner.cancel.cancelled().await;
    }
}
