//! Configuration: one typed struct, layered `config/default.toml` -> the
//! operator's file -> `HERALD_...` environment variables.
//!
//! The defaults live in `config/default.toml` (compiled into the binary, so a
//! deployment cannot run with a default that differs from the documented one),
//! every key is documented there, and [`Config::load`] rejects an invalid value
//! with a message naming the key, before anything is started.
//!
//! Each section has a module here holding its struct and the checks of its
//! values (`[kafka]` is [`kafka`], `[ops]`, `[log]` and `[shutdown]` are
//! [`ops`]); `[envelope]` is [`EnvelopeConfig`], beside the rules it
//! compiles. Loading reads the layers, then the files the configuration names
//! ([`Config::read_files`]), then checks each section ([`Config::validate`]).

use std::path::Path;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use crate::routing::envelope::EnvelopeConfig;

pub mod admin;
pub mod auto_disable;
pub mod catalog;
pub mod connector;
pub mod dead_letter;
pub mod delivery;
pub mod history;
pub mod kafka;
pub mod ops;
pub mod portal;
pub mod redis;
pub mod retry;
pub mod subscriptions;
pub mod system_events;
pub mod token_quality;
pub mod waits;

/// The documented defaults, shipped as `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// Environment variables with this prefix override file values; `__` separates
/// nesting levels, e.g. `HERALD_KAFKA__GROUP_ID=herald-eu`.
pub const ENV_PREFIX: &str = "HERALD_";

/// A configuration value that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The files or environment could not be read or do not have the right shape.
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value parsed, but is not acceptable.
    #[error("invalid configuration value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Herald's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: kafka::KafkaConfig,
    pub redis: redis::RedisConfig,
    pub subscriptions: subscriptions::SubscriptionsConfig,
    pub envelope: EnvelopeConfig,
    pub delivery: delivery::DeliveryConfig,
    pub dead_letter: dead_letter::DeadLetterConfig,
    pub retry: retry::RetryConfig,
    pub system_events: system_events::SystemEventsConfig,
    pub auto_disable: auto_disable::AutoDisableConfig,
    pub ops: ops::OpsConfig,
    /// `[http]`, the operations listener's name in 0.1: read into
    /// `[ops]` when given (see [`Config::notices`]), never used itself.
    #[serde(default, rename = "http")]
    _renamed_http: Option<serde::de::IgnoredAny>,
    pub history: history::HistoryConfig,
    pub admin: admin::AdminConfig,
    pub portal: portal::PortalConfig,
    pub log: ops::LogConfig,
    pub shutdown: ops::ShutdownConfig,
    /// What the configuration should change (keys under an old name), for
    /// the log once logging is set up.
    #[serde(skip)]
    pub notices: Vec<String>,
}

/// Sections renamed, as (old, new): the old name is still read.
const RENAMED_SECTIONS: [(&str, &str); 1] = [("http", "ops")];

impl Config {
    /// Loads defaults, then `file` (when given), then the environment, reads
    /// the files the result names, and validates it.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::invalid(
                    "--config",
                    format!("file {} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only `HERALD_SECTION__KEY` variables are configuration; others with
        // the prefix (`HERALD_CONFIG`, the test suite's) are not.
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        Self::from_figment(figment.merge(env))
    }

    /// Builds a configuration from defaults overlaid with a TOML string; used
    /// by tests and tools that assemble configuration in code.
    pub fn from_toml_overlay(overlay: &str) -> Result<Config, ConfigError> {
        Self::from_toml_overlays(&[overlay])
    }

    /// Like [`Config::from_toml_overlay`] with several layers, last wins.
    pub fn from_toml_overlays(overlays: &[&str]) -> Result<Config, ConfigError> {
        let figment = overlays.iter().fold(Figment::from(Toml::string(DEFAULT_TOML)), |f, o| {
            f.merge(Toml::string(o))
        });
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let (figment, notices) = Self::read_renamed(figment);
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.read_files()?;
        config.validate()?;
        config.notices = notices;
        Ok(config)
    }

    /// Reads sections given under an old name as the new one (the old
    /// name's values win: defaults only use the new one), with a notice for
    /// each.
    fn read_renamed(mut figment: Figment) -> (Figment, Vec<String>) {
        let mut notices = Vec::new();
        for (old, new) in RENAMED_SECTIONS {
            if let Ok(values) = figment.find_value(old) {
                figment = figment.merge(figment::providers::Serialized::default(new, values));
                notices.push(format!(
                    "configuration section `[{old}]` is now `[{new}]` (HERALD_{}__* is HERALD_{}__*); \
                     the old name is still read, but will not be after the next major version",
                    old.to_uppercase(),
                    new.to_uppercase()
                ));
            }
        }
        (figment, notices)
    }

    /// Reads the files the configuration names: `delivery.ca_file`, and the
    /// catalogs and connectors of `[admin]` besides the built-in ones.
    pub fn read_files(&mut self) -> Result<(), ConfigError> {
        self.delivery.read_files()?;
        self.admin.read_files()
    }

    /// Checks what types alone cannot say, section by section; the first
    /// problem found is named by its key. The files are read before (the
    /// catalogs a tenant names must be among them).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sources = &self.kafka.topics;
        let dead_letter = &self.dead_letter.topic;
        self.kafka.check()?;
        self.redis.check()?;
        self.subscriptions.check()?;
        self.envelope
            .check()
            .map_err(|(key, e)| ConfigError::invalid(key, e.to_string()))?;
        self.delivery.check()?;
        self.dead_letter.check(sources)?;
        self.shutdown.check()?;
        self.ops.check()?;
        self.retry.check(&self.kafka, dead_letter)?;
        self.history.check(sources, dead_letter)?;
        self.admin.check()?;
        self.portal.check()?;
        self.system_events.check()?;
        self.log.check()?;
        Ok(())
    }
}

/// A count that must be at least 1.
fn positive(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be at least 1"));
    }
    Ok(())
}

/// A duration that must be longer than zero.
fn nonzero(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than 0s"));
    }
    Ok(())
}

/// An HTTP listener's limits (`[ops]`, `[admin]`): connections held at once,
/// and the two timeouts.
fn check_listener(
    section: &str,
    max_connections: usize,
    header_read_timeout: Duration,
    request_timeout: Duration,
) -> Result<(), ConfigError> {
    positive(&format!("{section}.max_connections"), max_connections)?;
    nonzero(&format!("{section}.header_read_timeout"), header_read_timeout)?;
    nonzero(&format!("{section}.request_timeout"), request_timeout)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let config = Config::from_toml_overlay("").expect("defaults are valid");
        assert_eq!(config.kafka.group_id, "herald");
        assert_eq!(config.dead_letter.topic, "herald.dlq");
        let delays: Vec<u64> = config.retry.tiers.iter().map(|t| t.delay.as_secs()).collect();
        assert_eq!(
            delays,
            [3600, 3 * 3600, 86400, 3 * 86400, 7 * 86400],
            "1h, 3h, 1d, 3d, 1w"
        );
        assert!(config.delivery.allow_cidrs.is_empty(), "SSRF-safe by default");
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        let err = Config::from_toml_overlay("[kafka]\nmax_in_flight = 0").unwrap_err();
        assert!(err.to_string().contains("kafka.max_in_flight"), "{err}");

        let err = Config::from_toml_overlay("[delivery]\nrequest_timeout = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("request_timeout"), "{err}");

        let err = Config::from_toml_overlay("[kafka]\nbrokerz = \"x\"").unwrap_err();
        assert!(err.to_string().contains("brokerz"), "{err}");

        let err = Config::from_toml_overlay("[envelope.topics.t]\nevent_type = \"nonsense\"").unwrap_err();
        assert!(err.to_string().contains("envelope.topics.t.event_type"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail returns its own error type
    fn environment_overrides_files() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_KAFKA__GROUP_ID", "from-env");
            jail.set_env("HERALD_DELIVERY__ALLOW_CIDRS", "[\"127.0.0.0/8\"]");
            jail.set_env("HERALD_CONFIG", "herald.toml");
            jail.set_env("HERALD_TEST_BROKERS", "elsewhere:9092");
            jail.set_env("HERALD_KAFKA__PROPERTIES__SASL__USERNAME", "herald");
            jail.set_env("HERALD_KAFKA__CONSUMER_PROPERTIES__SESSION__TIMEOUT__MS", "6000");
            jail.create_file("herald.toml", "[kafka]\ngroup_id = \"from-file\"\nbrokers = \"b:9092\"")?;
            let config = Config::load(Some(Path::new("herald.toml"))).expect("loads");
            assert_eq!(config.kafka.group_id, "from-env");
            assert_eq!(config.kafka.brokers, "b:9092");
            assert_eq!(config.delivery.allow_cidrs.len(), 1);
            assert_eq!(config.kafka.properties["sasl.username"], "herald");
            assert_eq!(config.kafka.consumer_properties["session.timeout.ms"], "6000");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn the_operations_listener_is_read_under_its_old_name_with_a_notice() {
        let current = Config::from_toml_overlay("[ops]\nlisten = \"127.0.0.1:9001\"").unwrap();
        assert_eq!(current.ops.listen.port(), 9001);
        assert!(current.notices.is_empty());
        let old = Config::from_toml_overlay("[http]\nlisten = \"127.0.0.1:9002\"").unwrap();
        assert_eq!(old.ops.listen.port(), 9002);
        assert_eq!(
            old.ops.stall_after, current.ops.stall_after,
            "the rest keeps its default"
        );
        assert_eq!(old.notices.len(), 1);
        assert!(old.notices[0].contains("`[http]` is now `[ops]`"), "{:?}", old.notices);
        let invalid = Config::from_toml_overlay("[http]\nstall_after = \"0s\"").unwrap_err();
        assert!(invalid.to_string().contains("ops.stall_after"), "{invalid}");
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_HTTP__LISTEN", "127.0.0.1:9003");
            let config = Config::load(None).expect("loads");
            assert_eq!(config.ops.listen.port(), 9003);
            assert!(config.notices[0].contains("HERALD_OPS__*"), "{:?}", config.notices);
            Ok(())
        });
    }
}
