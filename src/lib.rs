pub mod config;
pub mod dli;
pub mod metrics;
pub mod poll;
pub mod secret;
pub mod store;
