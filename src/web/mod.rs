//! The HTTP side of the exporter: the hyper server (`server`), the exporter-toolkit web config
//! file (`config`: TLS, client certificates, basic auth, headers, rate limit) and the helpers only
//! the server uses (`conn`: one connection, HTTP/1.1 or HTTP/2; `basic_auth`, `rate_limit`,
//! `write_timeout`).
//!
//! It reads what `/metrics` shows from [`crate::metrics`] and readiness from [`crate::store`].
//! It must not import the pollers or the DLI client: a scrape costs the same whatever DLI does.

mod basic_auth;
pub mod config;
mod conn;
mod rate_limit;
pub mod server;
mod write_timeout;

pub use config::{WebConfigError, WebConfigWatcher};
pub use server::{Limits, ReloadFn, ServerState, serve};
