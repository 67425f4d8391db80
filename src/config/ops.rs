//! `[ops]`, `[log]` and `[shutdown]`: the operations listener, log output,
//! and how long shutdown waits.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::{check_listener, nonzero, ConfigError};

/// The operations listener (`/metrics`, `/healthz`, `/readyz`, `/status`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    pub listen: SocketAddr,
    /// Connections held at once.
    pub max_connections: usize,
    /// For a request's head, and for the next request on a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// For handling a request until its response head.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A partition is reported stalled on `/status` when its oldest event in
    /// flight is older than this, or records wait and nothing was committed
    /// for this long.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// Tenants given delivery series of their own on `/metrics`, the first
    /// this replica delivers for; the others are counted together under
    /// `tenant="(other)"`.
    pub max_tenant_series: usize,
}

impl OpsConfig {
    /// Checks `[ops]`: the stall threshold and the listener's limits.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        nonzero("ops.stall_after", self.stall_after)?;
        check_listener(
            "ops",
            self.max_connections,
            self.header_read_timeout,
            self.request_timeout,
        )
    }
}

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,herald=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Shutdown behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight events may take to finish once shutdown starts.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl LogConfig {
    /// Checks `[log]`: `level` is a filter `tracing` accepts.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        tracing_subscriber::EnvFilter::try_new(&self.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?;
        Ok(())
    }
}

impl ShutdownConfig {
    /// Checks `[shutdown]`: a drain timeout.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        nonzero("shutdown.drain_timeout", self.drain_timeout)
    }
}
