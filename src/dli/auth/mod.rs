//! Authentication of DLI requests: AK/SK signing (`aksk`), IAM tokens (`token`), and temporary
//! keys (`temporary`: their cache and refresh) from the metadata service (`metadata`) or IAM's
//! OIDC exchange (`oidc`), both answering in the shape `keys` parses.

pub mod aksk;
pub mod keys;
pub mod metadata;
pub mod oidc;
pub mod temporary;
pub mod token;
