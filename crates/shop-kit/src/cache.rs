//! Redis: the shared connection and key prefixes.
//!
//! Every key a service writes starts with its [`KeyPrefix`] (`REDIS_KEY_PREFIX`), so several
//! deployments, or parallel tests, can share one Redis without seeing each other's keys.

use std::time::Duration;

use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::{ConfigError, HumanDuration, Vars};

/// Settings of a service's Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `REDIS_URL`: `redis://[:password@]host:port[/db]` (default `redis://127.0.0.1:6379`).
    pub url: SecretString,
    /// `REDIS_KEY_PREFIX`: prepended to every key (default `shop:`).
    pub key_prefix: KeyPrefix,
    /// `REDIS_TIMEOUT`: the longest one command may take (default 500ms).
    pub timeout: Duration,
}

impl RedisConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let url = vars.optional_secret("REDIS_URL").unwrap_or_else(|| SecretString::from("redis://127.0.0.1:6379"));
        if redis::Client::open(url.expose_secret()).is_err() {
            return Err(ConfigError::Invalid {
                name: "REDIS_URL".into(),
                value: "(hidden)".into(),
                reason: "not a redis:// URL".into(),
            });
        }
        Ok(Self {
            url,
            key_prefix: KeyPrefix::new(vars.raw("REDIS_KEY_PREFIX").unwrap_or("shop:")),
            timeout: vars.or("REDIS_TIMEOUT", HumanDuration(Duration::from_millis(500)))?.0,
        })
    }
}

/// The prefix of every key of one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPrefix(String);

impl KeyPrefix {
    pub fn new(prefix: &str) -> Self {
        Self(prefix.to_owned())
    }

    /// `<prefix><part>:<part>...`
    pub fn key(&self, parts: &[&str]) -> String {
        format!("{}{}", self.0, parts.join(":"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Connects, with per-command and connect timeouts, reconnecting on its own after a drop.
pub async fn connect(config: &RedisConfig) -> anyhow::Result<ConnectionManager> {
    let client = redis::Client::open(config.url.expose_secret()).context("REDIS_URL is not a redis:// URL")?;
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(config.timeout.max(Duration::from_secs(1)))
        .set_response_timeout(config.timeout)
        .set_number_of_retries(2)
        .set_max_delay(1_000);
    ConnectionManager::new_with_config(client, settings).await.context("cannot connect to Redis")
}
