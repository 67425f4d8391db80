//! `[delivery]`: the HTTP client that calls the receivers, its limits and
//! the destinations it may reach.

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::{nonzero, positive, ConfigError};

/// The HTTP client that calls the receivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Name resolution deadline, apart from the connection's.
    #[serde(with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// How long a name's addresses are kept once looked up.
    #[serde(with = "humantime_serde")]
    pub resolve_cache_ttl: Duration,
    /// Whole-request deadline, including reading the response.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Concurrent requests over all endpoints.
    pub max_in_flight: usize,
    /// Concurrent requests to one endpoint (a webhook may set a lower one).
    pub max_in_flight_per_endpoint: usize,
    /// Concurrent requests of one tenant's webhooks (those without a tenant
    /// share one such bucket); freed slots go to the tenant holding the fewest.
    pub max_in_flight_per_tenant: usize,
    /// Concurrent requests to one destination host and port, over every
    /// webhook and tenant.
    pub max_in_flight_per_host: usize,
    /// Per-host exceptions to `max_in_flight_per_host`, by host name.
    #[serde(default)]
    pub max_in_flight_by_host: BTreeMap<String, usize>,
    /// How long a delivery may wait for a free slot at its endpoint before it
    /// fails as `saturated`, so a slow or dead endpoint cannot hold a partition.
    #[serde(with = "humantime_serde")]
    pub max_queue_wait: Duration,
    /// Bytes of the response body read (and kept for diagnostics).
    pub max_response_bytes: usize,
    /// Networks that are reachable even though the SSRF policy blocks them.
    #[serde(default)]
    pub allow_cidrs: Vec<IpNet>,
    /// Networks that only the named tenant's webhooks may reach, beyond
    /// `allow_cidrs`.
    #[serde(default)]
    pub tenant_allow_cidrs: BTreeMap<String, Vec<IpNet>>,
    /// Destination ports a webhook URL may name (explicitly or by its scheme).
    pub allow_ports: Vec<PortRange>,
    /// Keep the response headers and body of a destination that the SSRF
    /// policy refuses by default and only an allowlist opens, in delivery
    /// history and test results. Off, only the status is shown, so the API
    /// cannot be used to read internal services.
    pub allowlisted_response_details: bool,
    /// Idle pooled connections kept per host.
    pub pool_max_idle_per_host: usize,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
}

/// A destination port, or an inclusive range of them (`443` or `"8000-8999"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range (both ends included).
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u16),
            Range(String),
        }
        let invalid = |text: &str| {
            serde::de::Error::custom(format!(
                "invalid port range {text:?}: expected a port (443) or \"first-last\" (\"8000-8999\")"
            ))
        };
        match Raw::deserialize(deserializer)? {
            Raw::One(port) => Ok(PortRange {
                first: port,
                last: port,
            }),
            Raw::Range(text) => {
                let (first, last) = text.split_once('-').unwrap_or((&text, &text));
                let first: u16 = first.trim().parse().map_err(|_| invalid(&text))?;
                let last: u16 = last.trim().parse().map_err(|_| invalid(&text))?;
                if first > last {
                    return Err(invalid(&text));
                }
                Ok(PortRange { first, last })
            }
        }
    }
}

impl DeliveryConfig {
    /// Checks `[delivery]`: the timeouts, the concurrency limits and the
    /// allowed ports.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let d = self;
        nonzero("delivery.connect_timeout", d.connect_timeout)?;
        nonzero("delivery.resolve_timeout", d.resolve_timeout)?;
        nonzero("delivery.resolve_cache_ttl", d.resolve_cache_ttl)?;
        nonzero("delivery.request_timeout", d.request_timeout)?;
        positive("delivery.max_in_flight", d.max_in_flight)?;
        positive("delivery.max_in_flight_per_endpoint", d.max_in_flight_per_endpoint)?;
        positive("delivery.max_in_flight_per_tenant", d.max_in_flight_per_tenant)?;
        positive("delivery.max_in_flight_per_host", d.max_in_flight_per_host)?;
        for (host, n) in &d.max_in_flight_by_host {
            positive(&format!("delivery.max_in_flight_by_host.\"{host}\""), *n)?;
        }
        if d.allow_ports.is_empty() {
            return Err(ConfigError::invalid(
                "delivery.allow_ports",
                "must name at least one port (\"1-65535\" allows every port)",
            ));
        }
        nonzero("delivery.max_queue_wait", d.max_queue_wait)?;
        Ok(())
    }
}
