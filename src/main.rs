//! dli_exporter: flags -> config -> logging -> run until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use dli_exporter::app::{self, App, StartOptions};
use dli_exporter::cli::Flags;
use dli_exporter::web::config::WebConfigWatcher;
use dli_exporter::{config, demo, logging, signals};

fn main() -> ExitCode {
    // Before any thread exists (see the module's doc).
    dli_exporter::malloc_tuning::single_arena();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(exporter_main()),
        Err(e) => {
            eprintln!("dli_exporter: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn exporter_main() -> ExitCode {
    let flags = Flags::parse();
    logging::init(flags.log_level, flags.log_format);
    match run(flags).await {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "dli_exporter failed");
            eprintln!("dli_exporter: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(flags: Flags) -> anyhow::Result<ExitCode> {
    let env: config::Env = std::env::vars().collect();
    if flags.check_config {
        let mut ok = match config::load(&flags.config_file, &env) {
            Ok(settings) => {
                print!("{}", config::summary(&settings));
                true
            }
            Err(e) => {
                eprintln!("{e}");
                false
            }
        };
        if let Some(path) = &flags.web_config_file {
            match WebConfigWatcher::load(path) {
                Ok(web) => println!("web config {}: {}", path.display(), web.current().summary()),
                Err(e) => {
                    eprintln!("{e}");
                    ok = false;
                }
            }
        }
        return Ok(if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    // Serving without the TLS or auth the operator asked for would be worse than not starting.
    let web = match &flags.web_config_file {
        Some(path) if !flags.once => Some(WebConfigWatcher::load(path)?),
        _ => None,
    };
    // The demo keeps its simulator alive for as long as the exporter runs.
    let (mut settings, _simulator, source) = if flags.demo {
        let (sim, settings) = demo::start().await.context("starting the demo simulator")?;
        (settings, Some(sim), None)
    } else {
        let settings = config::load(&flags.config_file, &env)?;
        (settings, None, Some((flags.config_file.clone(), env)))
    };
    flags.apply(&mut settings).map_err(anyhow::Error::msg)?;

    if flags.once {
        let (exposition, outcomes) = app::poll_once(&settings).await?;
        use std::io::Write;
        std::io::stdout()
            .write_all(&exposition)
            .context("writing to stdout")?;
        let failed: Vec<_> = outcomes.iter().filter(|o| !o.success).collect();
        for o in &failed {
            eprintln!(
                "dli_exporter: {}",
                o.error.as_deref().unwrap_or("poll failed")
            );
        }
        return Ok(if failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }

    let listener = tokio::net::TcpListener::bind(&settings.web.listen_address)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (web.listen_address / --web.listen-address)",
                settings.web.listen_address
            )
        })?;
    let web_summary = web.as_ref().map(|w| w.current().summary());
    let app = App::start_with(
        &settings,
        listener,
        StartOptions {
            source,
            web,
            ..StartOptions::default()
        },
    )?;
    tracing::info!(address = %app.addr, telemetry_path = %settings.web.telemetry_path,
        web_config = web_summary.as_deref().unwrap_or("none"),
        queues = settings.queue_pairs().count(), version = dli_exporter::cli::LONG_VERSION, "listening");
    let token = app.shutdown_token();
    tokio::spawn(async move {
        signals::shutdown().await;
        tracing::info!("shutting down");
        token.cancel();
    });
    signals::reload_on_sighup(app.reload_handle());
    app.run_until_cancelled().await;
    Ok(ExitCode::SUCCESS)
}
