//! dli_exporter: a Prometheus exporter for Huawei Cloud DLI Spark batch jobs.
//!
//! # Layout
//!
//! - [`config`]: the configuration file model, environment overrides, secrets, validation.
//! - [`secret`]: the redacting, zeroing `Secret` type for credentials.
//! - [`dli`]: the DLI client: signing, IAM tokens, ListBatches, errors, the page walker.
//! - [`poll`]: the per-queue poll schedule and the aggregation of a walk into a snapshot.
//! - [`store`]: the last good snapshot and poll status of every queue.
//! - [`metrics`]: the `/metrics` registry: job metrics rendered from the store, API self-metrics.
//! - [`render_cache`]: the last `/metrics` rendering (plain and gzip), reused until something changes.
//! - [`server`]: the hyper HTTP server: `/metrics`, `/`, `/-/healthy`, `/-/ready`, `/-/reload`,
//!   with TLS, auth and the request limits.
//! - [`web_config`], [`basic_auth`], [`rate_limit`]: `--web.config.file` (exporter-toolkit
//!   format): TLS, client certificates, basic auth, extra headers, a request rate limit; re-read
//!   when the files change.
//! - [`write_timeout`]: disconnects clients that stop reading their response.
//! - [`app`]: wiring of all of the above into a running daemon, and `--once`.
//! - [`cli`], [`logging`], [`signals`]: flags, log output, SIGTERM/SIGINT/SIGHUP;
//!   [`malloc_tuning`]: one allocator setting for `main`.
//! - [`sim`]: the embedded DLI simulator used by `--demo`, the tests and the benchmarks.
//! - [`demo`]: `--demo` settings around the simulator.

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod dli;
pub mod logging;
pub mod malloc_tuning;
pub mod metrics;
pub mod poll;
pub mod secret;
pub mod signals;
pub mod sim;
pub mod store;
pub mod version;
pub mod web;
