//! Authentication of DLI requests: AK/SK signing (`aksk`) and IAM tokens (`token`).

pub mod aksk;
pub mod token;
