pub mod aksk;
