//! `[delivery]`: the HTTP client that calls the receivers, its limits and
//! the destinations it may reach.

use std::collections::BTreeMap;
use std::path::PathBuf;
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
    /// A PEM file of certificate authorities trusted for receivers'
    /// certificates besides the built-in roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The certificates `ca_file` holds, read by [`Config::read_files`](super::Config::read_files).
    #[serde(skip)]
    pub ca_certificates: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// TLS sessions kept for resumption, one per receiver host at most, by
    /// the clients that present no client certificate (all of them share
    /// it).
    pub tls_session_cache: usize,
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
    /// The rate limit of webhooks that set none in `limits.rate`; none by
    /// default.
    #[serde(default)]
    pub default_rate: Option<crate::webhook::RateLimit>,
    /// How long a rate lowered by a `429` takes to come back, linearly.
    #[serde(with = "humantime_serde")]
    pub rate_recovery: Duration,
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
    /// Idle pooled connections kept per host; unset, as many as the largest
    /// per-host cap allows at once ([`DeliveryConfig::idle_connections_per_host`]).
    #[serde(default)]
    pub pool_max_idle_per_host: Option<usize>,
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
    /// Reads `ca_file`: every certificate in it, each one checked by adding
    /// it to a client's roots, so that a file Herald cannot use stops it at
    /// start rather than at its first delivery.
    pub(super) fn read_files(&mut self) -> Result<(), ConfigError> {
        const KEY: &str = "delivery.ca_file";
        let Some(path) = &self.ca_file else {
            self.ca_certificates.clear();
            return Ok(());
        };
        let invalid = |why: String| ConfigError::invalid(KEY, format!("{}: {why}", path.display()));
        use rustls_pki_types::pem::PemObject;
        let pem = std::fs::read(path).map_err(|e| invalid(e.to_string()))?;
        let certificates = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("not PEM: {e}")))?;
        if certificates.is_empty() {
            return Err(invalid("holds no PEM certificate".to_owned()));
        }
        let count = certificates.len();
        for (n, certificate) in certificates.iter().enumerate() {
            rustls::RootCertStore::empty()
                .add(certificate.clone())
                .map_err(|e| invalid(format!("certificate {} of {count} is not usable: {e}", n + 1)))?;
        }
        self.ca_certificates = certificates;
        Ok(())
    }

    /// Idle connections the pool keeps per host: `pool_max_idle_per_host`,
    /// or else as many as requests to one host may be in flight at once (the
    /// largest of `max_in_flight_per_host` and `max_in_flight_by_host`, at
    /// most `max_in_flight`). Fewer would close a connection after each
    /// request beyond them and open a new one for the next: with ten
    /// webhooks on one host that churn cost more CPU than the requests.
    pub fn idle_connections_per_host(&self) -> usize {
        self.pool_max_idle_per_host.unwrap_or_else(|| {
            let widest = self.max_in_flight_by_host.values().copied().max().unwrap_or(0);
            widest.max(self.max_in_flight_per_host).min(self.max_in_flight)
        })
    }

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
        positive("delivery.tls_session_cache", d.tls_session_cache)?;
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
        nonzero("delivery.rate_recovery", d.rate_recovery)?;
        if let Some(rate) = &d.default_rate {
            rate.check()
                .map_err(|m| ConfigError::invalid("delivery.default_rate", m))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_pool_keeps_per_host_as_many_connections_as_one_host_may_use_at_once() {
        let idle = |overlay: &str| {
            Config::from_toml_overlay(overlay)
                .unwrap()
                .delivery
                .idle_connections_per_host()
        };
        assert_eq!(idle(""), 128, "max_in_flight_per_host");
        assert_eq!(idle("[delivery]\nmax_in_flight_per_host = 64"), 64);
        assert_eq!(
            idle("[delivery]\nmax_in_flight_by_host = { \"hooks.example.com\" = 300 }"),
            300,
            "a host allowed more keeps more"
        );
        assert_eq!(
            idle("[delivery]\nmax_in_flight = 100\nmax_in_flight_by_host = { \"hooks.example.com\" = 300 }"),
            100,
            "never more than are in flight at all"
        );
        assert_eq!(idle("[delivery]\npool_max_idle_per_host = 0"), 0, "set, it is kept");
    }

    /// A configuration naming `path` as `delivery.ca_file`: its error, if any.
    fn with_ca_file(path: &std::path::Path) -> Result<Config, String> {
        Config::from_toml_overlay(&format!("[delivery]\nca_file = \"{}\"", path.display())).map_err(|e| e.to_string())
    }

    fn ca_pem() -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&rcgen::KeyPair::generate().unwrap()).unwrap().pem()
    }

    #[test]
    fn a_default_rate_outside_its_bounds_stops_herald_naming_the_key() {
        let ok = Config::from_toml_overlay("[delivery]\ndefault_rate = { per_second = 0.5, burst = 3 }").unwrap();
        assert_eq!(
            ok.delivery.default_rate.map(|r| (r.per_second, r.burst())),
            Some((0.5, 3))
        );
        let e = Config::from_toml_overlay("[delivery]\ndefault_rate = { per_second = 0 }")
            .unwrap_err()
            .to_string();
        assert!(e.contains("delivery.default_rate") && e.contains("per_second"), "{e}");
    }

    #[test]
    fn every_certificate_of_delivery_ca_file_is_read_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cas.pem");
        std::fs::write(&path, ca_pem() + &ca_pem()).unwrap();
        let config = with_ca_file(&path).unwrap();
        assert_eq!(config.delivery.ca_certificates.len(), 2);
        let none = Config::from_toml_overlay("").unwrap();
        assert!(none.delivery.ca_file.is_none() && none.delivery.ca_certificates.is_empty());
    }

    #[test]
    fn a_delivery_ca_file_herald_cannot_use_stops_it_naming_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let e = with_ca_file(&missing).unwrap_err();
        assert!(e.contains("delivery.ca_file") && e.contains("missing.pem"), "{e}");

        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = with_ca_file(&empty).unwrap_err();
        assert!(
            e.contains("delivery.ca_file") && e.contains("holds no PEM certificate"),
            "{e}"
        );

        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            ca_pem() + "-----BEGIN CERTIFICATE-----\nMIIBAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = with_ca_file(&broken).unwrap_err();
        assert!(
            e.contains("delivery.ca_file") && e.contains("certificate 2 of 2"),
            "{e}"
        );
    }
}
