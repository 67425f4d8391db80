//! `herald`: parses arguments, loads the configuration and starts the
//! runtime; the commands themselves are in `herald::cli`.

use std::process::ExitCode;

use clap::Parser;
use herald::cli::{execute, Cli, Command};
use herald::config::Config;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    herald::telemetry::logging::init(&config.log);
    for notice in &config.notices {
        tracing::warn!("{notice}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The services log their fatal error (log collectors read it there);
    // command-line tools only print it once.
    let service = matches!(cli.command, Command::Run | Command::Api);
    match runtime.block_on(execute(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if service {
                tracing::error!("{e:#}");
            }
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
