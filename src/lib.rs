pub mod config;
pub mod dli;
pub mod secret;
