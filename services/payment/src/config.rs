//! The payment service's configuration, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | `127.0.0.1:8085` | REST + gRPC |
//! | `DATABASE_URL` | required | Postgres `shop_payment` |
//! | `JWKS_URL` | `http://127.0.0.1:8081/.well-known/jwks.json` | the user service's keys |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_CREATE_TOPICS` | `127.0.0.1:9092`, none, `false` | events |
//! | `PAYMENT_CHARGE_ATTEMPTS` | `3` | attempts at a charge that fails transiently before it is declined (1 to 10) |
//! | `PAYMENT_WORKER_CONCURRENCY` | `32` | provider calls in flight per replica (1 to 256) |
//! | `PAYMENT_PROVIDER_URL` (or `PAYMENT_PROVIDER_URL_FILE`) | none | a provider behind HTTP (see [`crate::provider`]); unset: the in-process test provider |
//! | `PAYMENT_PROVIDER_TIMEOUT` | `10s` | the longest one provider call may take (1 s to 60 s); a claimed payment's lease is three times this, plus `DATABASE_ACQUIRE_TIMEOUT`, three `DATABASE_STATEMENT_TIMEOUT`s and 5 s (70 s by default) |
//! | `PAYMENT_DECLINE_AFTER` | `60s` | after the last failed attempt at a charge, how long to wait before the final lookup that declines it (0 s to 1 h): a call that timed out may still land at the provider |
//! | `TEST_PROVIDER_LATENCY` | `0s` | the test provider's delay per call |
//! | `TEST_PROVIDER_FAILURE_RATE`, `TEST_PROVIDER_TIMEOUT_RATE` | `0`, `0` | the share of its calls that fail transiently, or take effect and never answer |
//! | `RETENTION_INTERVAL`, `RETENTION_BATCH`, `RETENTION_OUTBOX`, `RETENTION_INBOX` | `10m`, `1000`, `1d`, `7d` | pruning old rows (see `shop_kit::retention`) |

use std::time::Duration;

use shop_kit::{
    auth::AuthConfig,
    config::{HttpConfig, HumanDuration, TelemetryConfig, Vars},
    db::DatabaseConfig,
    events::KafkaConfig,
    retention::RetentionConfig,
};

use secrecy::{ExposeSecret as _, SecretString};

use crate::provider::TestBehaviour;

pub const DEFAULT_PORT: u16 = 8085;

pub struct Config {
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub retention: RetentionConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub jwks_url: String,
    pub charge_attempts: u32,
    pub worker_concurrency: usize,
    pub provider: ProviderConfig,
}

/// Which provider, and how long its calls may take.
pub struct ProviderConfig {
    pub url: Option<SecretString>,
    pub timeout: Duration,
    pub decline_after: Duration,
    pub test: TestBehaviour,
}

impl ProviderConfig {
    pub fn from_vars(vars: &Vars) -> anyhow::Result<Self> {
        let timeout = vars.or("PAYMENT_PROVIDER_TIMEOUT", HumanDuration(Duration::from_secs(10)))?.0;
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&timeout) {
            return Err(vars.invalid("PAYMENT_PROVIDER_TIMEOUT", "must be between 1s and 60s").into());
        }
        let rate = |name: &str| -> anyhow::Result<f64> {
            let rate: f64 = vars.or(name, 0.0)?;
            if !(0.0..=1.0).contains(&rate) {
                return Err(vars.invalid(name, "must be between 0 and 1").into());
            }
            Ok(rate)
        };
        let test = TestBehaviour {
            latency: vars.or("TEST_PROVIDER_LATENCY", HumanDuration(Duration::ZERO))?.0,
            failure_rate: rate("TEST_PROVIDER_FAILURE_RATE")?,
            timeout_rate: rate("TEST_PROVIDER_TIMEOUT_RATE")?,
        };
        // A secret: the URL may carry the provider's credentials. Errors never repeat it.
        let url = vars.optional_secret("PAYMENT_PROVIDER_URL")?;
        if let Some(url) = &url
            && !(url.expose_secret().starts_with("http://") || url.expose_secret().starts_with("https://"))
        {
            return Err(shop_kit::config::ConfigError::Invalid {
                name: "PAYMENT_PROVIDER_URL".into(),
                value: "(not shown)".into(),
                reason: "must be an http:// or https:// URL".into(),
            }
            .into());
        }
        let decline_after = vars.or("PAYMENT_DECLINE_AFTER", HumanDuration(Duration::from_secs(60)))?.0;
        if decline_after > Duration::from_secs(3600) {
            return Err(vars.invalid("PAYMENT_DECLINE_AFTER", "must be at most 1h").into());
        }
        Ok(Self { url, timeout, decline_after, test })
    }

    /// How long a claimed payment stays with the worker that claimed it: the most one claim
    /// can take (a lookup, a call and a final lookup at the timeout each, then a record that
    /// may wait `acquire` for a connection and `statement` for each of its three
    /// statements), and 5 s. A worker that dies delays its payments by at most this; one that
    /// overruns it writes nothing (every write checks that its claim still holds).
    pub fn lease(&self, acquire: Duration, statement: Duration) -> Duration {
        self.timeout * 3 + acquire + statement * 3 + Duration::from_secs(5)
    }
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(&Vars::from_env())
    }

    pub fn from_vars(vars: &Vars) -> anyhow::Result<Self> {
        let auth = AuthConfig::from_vars(vars)?;
        let jwks_url = auth.jwks_endpoint().to_owned();
        let charge_attempts: u32 = vars.or("PAYMENT_CHARGE_ATTEMPTS", 3)?;
        if !(1..=10).contains(&charge_attempts) {
            return Err(vars.invalid("PAYMENT_CHARGE_ATTEMPTS", "must be between 1 and 10").into());
        }
        let worker_concurrency: usize = vars.or("PAYMENT_WORKER_CONCURRENCY", 32)?;
        if !(1..=256).contains(&worker_concurrency) {
            return Err(vars.invalid("PAYMENT_WORKER_CONCURRENCY", "must be between 1 and 256").into());
        }
        Ok(Self {
            http: HttpConfig::from_vars(vars, DEFAULT_PORT)?,
            telemetry: TelemetryConfig::from_vars(vars, crate::SERVICE)?,
            database: DatabaseConfig::from_vars(vars)?,
            retention: RetentionConfig::from_vars(vars)?,
            auth,
            kafka: KafkaConfig::from_vars(vars)?,
            jwks_url,
            charge_attempts,
            worker_concurrency,
            provider: ProviderConfig::from_vars(vars)?,
        })
    }
}
