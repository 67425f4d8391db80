//! `[redis]`: where subscriptions are stored, and how Herald connects.

use serde::Deserialize;

use super::ConfigError;

/// Where subscriptions are stored.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key and channel Herald reads or writes.
    pub prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisConfig {
    /// A client for `url`. Its connections send only the commands Herald
    /// uses: the client library's `CLIENT SETINFO` (a label in `CLIENT LIST`)
    /// is left out, so the ACL user of deploy/k8s/redis-acl.conf needs no
    /// permission for it and Redis logs no refusal on every connection.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let info = self.url.as_str().into_connection_info()?;
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        redis::Client::open(info.set_redis_settings(settings))
    }

    /// How Herald's connections behave: 5 s to connect, 5 s for a reply,
    /// two reconnection attempts per failed command (the next command tries
    /// again, so a Redis that comes back is used again).
    pub fn connection_config() -> redis::aio::ConnectionManagerConfig {
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(5)))
            .set_number_of_retries(2)
    }

    /// A connection made at its first command, not now: a process started
    /// before Redis starts anyway, and its commands fail (and are retried by
    /// their callers) until Redis is reached.
    pub fn lazy_connection(client: &redis::Client) -> redis::RedisResult<redis::aio::ConnectionManager> {
        redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), Self::connection_config())
    }

    /// `url` as it may be shown in errors and logs: without its password.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "(an unparsable redis.url)".to_owned(),
        }
    }
}

impl RedisConfig {
    /// Checks `[redis]`: a key prefix, and a `redis://` URL.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.prefix.is_empty() {
            return Err(ConfigError::invalid("redis.prefix", "must not be empty"));
        }
        redis::parse_redis_url(&self.url).ok_or_else(|| ConfigError::invalid("redis.url", "is not a redis:// URL"))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_redis_password_never_shows() {
        let config =
            Config::from_toml_overlay("[redis]\nurl = \"redis://herald:s3cr3t-pass@redis.internal:6380/2\"").unwrap();
        let shown = config.redis.redacted_url();
        assert_eq!(shown, "redis://herald:***@redis.internal:6380/2");
        assert!(!format!("{config:?}").contains("s3cr3t-pass"), "nor in debug output");
    }

    #[test]
    fn the_redis_client_keeps_the_url_and_sends_no_client_setinfo() {
        let config =
            Config::from_toml_overlay("[redis]\nurl = \"redis://herald:s3cr3t-pass@redis.internal:6380/2\"").unwrap();
        let client = config.redis.client().unwrap();
        let settings = client.get_connection_info().redis_settings();
        assert_eq!(
            (settings.username(), settings.password(), settings.db()),
            (Some("herald"), Some("s3cr3t-pass"), 2)
        );
        assert!(
            settings.skip_set_lib_name(),
            "no CLIENT SETINFO, which the ACL does not allow"
        );
    }
}
