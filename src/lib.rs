//! dli_exporter: a Prometheus exporter for Huawei Cloud DLI Spark batch jobs.
//!
//! # Layout
//!
//! Data flows one way: config → dli → poll → store → metrics → web; `app` wires them together
//! and `main` only picks a mode. docs/architecture.md describes each step and what each module may
//! not import (a test, `tests/architecture.rs`, enforces it).
//!
//! - [`config`]: the configuration file model, environment overrides, secrets, validation.
//! - [`dli`]: the DLI client: signing, IAM tokens, ListBatches, errors, the page walker, the job
//!   state vocabulary.
//! - [`poll`]: the per-queue poll schedule, the aggregation of a walk into a snapshot and the job
//!   lifecycle between walks.
//! - [`store`]: the hand-over point: the last good snapshot and poll status of every queue, which
//!   poll writes and metrics reads.
//! - [`metrics`]: the `/metrics` registry and its render cache.
//! - [`web`]: the HTTP server and the exporter-toolkit web config (TLS, auth, limits).
//! - [`app`]: the running daemon (start, reload, shutdown, signals) and one function per mode
//!   (`--check-config`, `--once`, `--demo`, serve).
//! - [`cli`]: flags, logging setup and the allocator setting `main` applies.
//! - [`sim`]: the embedded DLI simulator used by `--demo`, the tests and the benchmarks.
//! - [`secret`], [`version`]: the redacting `Secret` type and the build's version strings,
//!   shared by all of the above.

pub mod app;
pub mod cli;
pub mod config;
pub mod dli;
pub mod metrics;
pub mod poll;
pub mod secret;
pub mod sim;
pub mod store;
pub mod version;
pub mod web;
