pub mod dli;
pub mod secret;
