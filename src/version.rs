//! The exporter's version, git revision and rustc version (set by `build.rs`): the one source
//! for `--version`, the landing page, `dli_exporter_build_info` and the HTTP `User-Agent`.

/// The crate version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from (`unknown` outside a git checkout).
pub const REVISION: &str = env!("DLI_EXPORTER_REVISION");
/// The rustc that built the binary.
pub const RUSTC_VERSION: &str = env!("DLI_EXPORTER_RUSTC_VERSION");

/// `--version`: version, git revision and rustc version.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (revision ",
    env!("DLI_EXPORTER_REVISION"),
    ", rustc ",
    env!("DLI_EXPORTER_RUSTC_VERSION"),
    ")"
);

/// The `User-Agent` of every request to DLI and IAM.
pub const USER_AGENT: &str = concat!("dli_exporter/", env!("CARGO_PKG_VERSION"));
