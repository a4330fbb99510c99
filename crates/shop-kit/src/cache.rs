//! Redis: the shared connection and key prefixes.
//!
//! Every key a service writes starts with its [`KeyPrefix`] (`REDIS_KEY_PREFIX`), so several
//! deployments, or parallel tests, can share one Redis without seeing each other's keys.
//!
//! TLS (rustls): a `rediss://` URL connects over TLS and checks the server's certificate for
//! the URL's host, against the public webpki roots or, with `REDIS_CA_FILE`, against that PEM
//! bundle alone (a Redis in the cluster has a private CA). `REDIS_CA_FILE` with a `redis://`
//! URL is refused: it would verify nothing.

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
    /// `REDIS_CA_FILE`: the CA certificates (PEM) a `rediss://` server's certificate is
    /// checked against, instead of the public roots.
    pub ca: Option<Vec<u8>>,
}

impl RedisConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let url = vars.optional_secret("REDIS_URL")?.unwrap_or_else(|| SecretString::from("redis://127.0.0.1:6379"));
        if redis::Client::open(url.expose_secret()).is_err() {
            return Err(ConfigError::Invalid {
                name: "REDIS_URL".into(),
                value: "(hidden)".into(),
                reason: "not a redis:// URL".into(),
            });
        }
        let ca = vars.ca_file("REDIS_CA_FILE")?.map(|(_, pem)| pem);
        if ca.is_some() && !url.expose_secret().starts_with("rediss://") {
            return Err(vars.invalid("REDIS_CA_FILE", "verifies nothing unless REDIS_URL is a rediss:// URL"));
        }
        Ok(Self {
            url,
            key_prefix: KeyPrefix::new(vars.raw("REDIS_KEY_PREFIX").unwrap_or("shop:")),
            timeout: vars.or("REDIS_TIMEOUT", HumanDuration(Duration::from_millis(500)))?.0,
            ca,
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

/// A client for `config`'s Redis (for connections of another kind: pub/sub, say).
pub fn client(config: &RedisConfig) -> anyhow::Result<redis::Client> {
    match &config.ca {
        None => redis::Client::open(config.url.expose_secret()).context("REDIS_URL is not a redis:// URL"),
        Some(pem) => redis::Client::build_with_tls(
            config.url.expose_secret(),
            redis::TlsCertificates { client_tls: None, root_cert: Some(pem.clone()) },
        )
        .context("REDIS_URL or REDIS_CA_FILE cannot make a TLS client"),
    }
}

/// Connects, with per-command and connect timeouts, reconnecting on its own after a drop.
pub async fn connect(config: &RedisConfig) -> anyhow::Result<ConnectionManager> {
    let client = client(config)?;
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(config.timeout.max(Duration::from_secs(1)))
        .set_response_timeout(config.timeout)
        .set_number_of_retries(1)
        .set_max_delay(1_000);
    ConnectionManager::new_with_config(client, settings).await.context("cannot connect to Redis")
}

/// Why a guarded Redis call gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("redis is marked unavailable for a cool-down after a failure")]
    CoolingDown,
    #[error("redis did not answer within {0:?}")]
    TimedOut(Duration),
    #[error("redis failed: {0}")]
    Failed(#[from] redis::RedisError),
}

/// A circuit breaker for an optional Redis: each call gets a hard deadline, and after a
/// failure calls are refused at once for a cool-down, so an outage costs callers nothing
/// but a skipped cache (rather than seconds of reconnect attempts per request).
pub struct Breaker {
    deadline: Duration,
    cool_down: Duration,
    open_until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Breaker {
    pub fn new(deadline: Duration, cool_down: Duration) -> Self {
        Self { deadline, cool_down, open_until: std::sync::Mutex::new(None) }
    }

    /// Runs `call` unless the breaker is open; a failure or a missed deadline opens it.
    pub async fn call<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Unavailable> {
        if self.is_open() {
            return Err(Unavailable::CoolingDown);
        }
        let outcome = match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(error)) => Unavailable::Failed(error),
            Err(_) => Unavailable::TimedOut(self.deadline),
        };
        self.open();
        Err(outcome)
    }

    fn is_open(&self) -> bool {
        let mut open_until = self.open_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match *open_until {
            Some(until) if std::time::Instant::now() < until => true,
            Some(_) => {
                *open_until = None;
                false
            }
            None => false,
        }
    }

    fn open(&self) {
        let mut open_until = self.open_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *open_until = Some(std::time::Instant::now() + self.cool_down);
        tracing::warn!(cool_down = ?self.cool_down, "redis unavailable; skipping it for a cool-down");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_breaker_opens_on_failure_and_closes_after_the_cool_down() {
        let breaker = Breaker::new(Duration::from_millis(50), Duration::from_millis(100));
        assert_eq!(breaker.call(async { Ok::<_, redis::RedisError>(1) }).await.unwrap(), 1);
        let slow = breaker.call(async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, redis::RedisError>(2)
        });
        assert!(matches!(slow.await, Err(Unavailable::TimedOut(_))));
        assert!(matches!(breaker.call(async { Ok::<_, redis::RedisError>(3) }).await, Err(Unavailable::CoolingDown)));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(breaker.call(async { Ok::<_, redis::RedisError>(4) }).await.unwrap(), 4);
    }
}
