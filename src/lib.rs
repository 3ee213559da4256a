pub mod dli;
pub mod secret;
pub mod sim;
