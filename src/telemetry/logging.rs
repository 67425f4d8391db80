//! Log output: human-readable or JSON lines, filtered by `log.level` (or
//! `RUST_LOG` when set).

use tracing_subscriber::EnvFilter;

use crate::config::ops::{LogConfig, LogFormat};

/// Installs the global `tracing` subscriber. Calling it twice is harmless
/// (the second call is ignored), which keeps tests that build several
/// applications in one process simple.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = match config.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.try_init(),
    };
}
