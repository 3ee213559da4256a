//! Everything that talks to DLI and IAM: request signing and tokens (`auth`), the serde model
//! (`model`), the HTTP client with its TLS roots, proxy and timeouts (`http`), one request
//! (`transport`, `client`), the hold-off after throttling (`throttle`), typed errors (`error`),
//! the page walk (`walk`, with its page count `progress`, and `detect`, what the pages say
//! about the server), `--probe`'s questions to the server (`probe`), the queue list (`queues`), the
//! project id of a region (`projects`) and retries of single requests (`retry`). Nothing here
//! knows about Prometheus or the daemon's schedule.

pub(crate) mod auth;
mod client;
pub mod detect;
mod error;
mod http;
pub mod model;
pub mod probe;
mod progress;
mod projects;
mod queues;
mod retry;
pub mod states;
mod throttle;
mod transport;
pub mod walk;

pub use client::DliClient;
pub use error::{DliError, FailureReason, Operation, POLL_FAILURE_REASONS};
pub use http::{ClientBuildError, ClientOptions};
pub use model::{BatchJob, BatchPage, ListBatchesQuery};
pub use progress::WalkProgress;
pub use projects::{LookupError, lookup_project_id};
pub use queues::{MAX_QUEUE_NAME_BYTES, QueueList, QueueRecord, decode_queue_list};
pub use retry::with_retries;
pub use throttle::ThrottlePolicy;
pub use transport::{NoopObserver, RequestObserver};
pub use walk::{
    ChangeLister, RetryPolicy, WalkError, WalkOptions, WalkStats, walk_queue,
    walk_queue_with_progress,
};
