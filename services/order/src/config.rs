//! The order service's configuration, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | `127.0.0.1:8084` | REST + gRPC |
//! | `DATABASE_URL` | required | Postgres `shop_order` |
//! | `JWKS_URL` | `http://127.0.0.1:8081/.well-known/jwks.json` | the user service's keys |
//! | `CART_GRPC_URL`, `PRODUCT_GRPC_URL` | `http://127.0.0.1:8083`, `http://127.0.0.1:8082` | the services checkout calls |
//! | `DEPENDENCY_DEADLINE` | `3s` | the deadline of each of those calls |
//! | `SERVICE_CLIENT_SECRET_FILE` or `SERVICE_CLIENT_SECRET` | required | this service's client secret (client id `order`) for service tokens (ADR 0012) |
//! | `SERVICE_TOKEN_URL` | `http://127.0.0.1:8081/v1/oauth/token` | where the user service issues them |
//! | `IDEMPOTENCY_LEASE` | `60s` | how long an `Idempotency-Key` claim with no answer yet holds off retries; after it a retry with the same key and body takes the claim over (its first request died). Must exceed `REQUEST_TIMEOUT`, so the request that claimed has ended |
//! | `IDEMPOTENCY_KEY_RETENTION` | `24h` | how long a key and its answer are kept for replays |
//! | `RATE_LIMIT_CHECKOUT` | `10/1m` | orders one customer may place in any such period (counted in Postgres, so every replica agrees); beyond it 429 with `Retry-After` |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_CREATE_TOPICS` | `127.0.0.1:9092`, none, `false` | order events |
//! | `RETENTION_INTERVAL`, `RETENTION_BATCH`, `RETENTION_OUTBOX`, `RETENTION_INBOX` | `10m`, `1000`, `1d`, `7d` | pruning old rows (see `shop_kit::retention`) |

use std::time::Duration;

use shop_kit::{
    auth::{AuthConfig, ServiceCredentials},
    config::{HttpConfig, HumanDuration, TelemetryConfig, Vars},
    db::DatabaseConfig,
    events::KafkaConfig,
    ratelimit::{self, Rate},
    retention::RetentionConfig,
};

pub const DEFAULT_PORT: u16 = 8084;

pub struct Config {
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub retention: RetentionConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub jwks_url: String,
    pub cart_url: String,
    pub product_url: String,
    pub deadline: Duration,
    pub idempotency_lease: Duration,
    pub idempotency_retention: Duration,
    pub checkout_rate: Rate,
    pub service_credentials: ServiceCredentials,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(&Vars::from_env())
    }

    pub fn from_vars(vars: &Vars) -> anyhow::Result<Self> {
        let auth = AuthConfig::from_vars(vars)?;
        let jwks_url = auth.jwks_endpoint().to_owned();
        let url = |name: &str, default: &str| -> anyhow::Result<String> {
            let url = vars.raw(name).unwrap_or(default).to_owned();
            if url.starts_with("http://") || url.starts_with("https://") {
                Ok(url)
            } else {
                Err(vars.invalid(name, "must be an http:// or https:// URL").into())
            }
        };
        let deadline = vars.or("DEPENDENCY_DEADLINE", HumanDuration(Duration::from_secs(3)))?.0;
        if deadline.is_zero() {
            return Err(vars.invalid("DEPENDENCY_DEADLINE", "must be greater than zero").into());
        }
        let http = HttpConfig::from_vars(vars, DEFAULT_PORT)?;
        let idempotency_lease = vars.or("IDEMPOTENCY_LEASE", HumanDuration(Duration::from_secs(60)))?.0;
        if idempotency_lease <= http.request_timeout {
            return Err(vars
                .invalid("IDEMPOTENCY_LEASE", format!("must exceed REQUEST_TIMEOUT ({:?})", http.request_timeout))
                .into());
        }
        let idempotency_retention = vars.or("IDEMPOTENCY_KEY_RETENTION", HumanDuration(Duration::from_secs(86_400)))?.0;
        if idempotency_retention <= idempotency_lease {
            return Err(vars.invalid("IDEMPOTENCY_KEY_RETENTION", "must exceed IDEMPOTENCY_LEASE").into());
        }
        Ok(Self {
            http,
            telemetry: TelemetryConfig::from_vars(vars, crate::SERVICE)?,
            database: DatabaseConfig::from_vars(vars)?,
            retention: RetentionConfig::from_vars(vars)?,
            auth,
            kafka: KafkaConfig::from_vars(vars)?,
            jwks_url,
            cart_url: url("CART_GRPC_URL", "http://127.0.0.1:8083")?,
            product_url: url("PRODUCT_GRPC_URL", "http://127.0.0.1:8082")?,
            deadline,
            idempotency_lease,
            idempotency_retention,
            checkout_rate: ratelimit::rate(vars, "RATE_LIMIT_CHECKOUT", "10/1m")?,
            service_credentials: ServiceCredentials::from_vars(vars, crate::SERVICE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_variable() {
        let base = Vars::from_pairs([("DATABASE_URL", "postgres://h/shop_order")]);
        let error = Config::from_vars(&base).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("SERVICE_CLIENT_SECRET is required"), "{error}");
        let base = base.with("SERVICE_CLIENT_SECRET", "s".repeat(32));
        assert!(Config::from_vars(&base).is_ok());
        for (name, value) in [
            ("SERVICE_CLIENT_SECRET", "short"),
            ("SERVICE_TOKEN_URL", "ftp://user"),
            ("CART_GRPC_URL", "cart:8083"),
            ("PRODUCT_GRPC_URL", "x"),
            ("DEPENDENCY_DEADLINE", "0s"),
            ("KAFKA_BROKERS", "nohost"),
            ("KAFKA_CREATE_TOPICS", "maybe"),
            ("IDEMPOTENCY_LEASE", "15s"),
            ("IDEMPOTENCY_KEY_RETENTION", "1m"),
            ("RETENTION_BATCH", "0"),
        ] {
            let error =
                Config::from_vars(&base.clone().with(name, value)).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(name), "case {name}={value}: {error:?}");
        }
    }
}
