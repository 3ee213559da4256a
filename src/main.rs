//! dli_exporter: flags -> logging -> one mode (check the config, poll once, probe the API, or
//! serve).

use std::process::ExitCode;

use clap::Parser;
use dli_exporter::app;
use dli_exporter::cli::{Flags, Mode, logging, malloc};

fn main() -> ExitCode {
    // Before any thread exists (see the module's doc).
    malloc::single_arena();
    let flags = Flags::parse();
    logging::init(flags.log_level, flags.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("dli_exporter: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match flags.mode() {
            Mode::CheckConfig => Ok(app::check_config(&flags)),
            Mode::Once => app::once(&flags).await,
            Mode::Probe => app::probe(&flags).await,
            Mode::Serve => app::serve(&flags).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line, in the format chosen by --log.format, on stderr.
            tracing::error!(error = %e, "dli_exporter failed");
            ExitCode::FAILURE
        }
    }
}
