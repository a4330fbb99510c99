//! The product service's configuration, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | `127.0.0.1:8082` | REST + gRPC |
//! | `DATABASE_URL` | required | Postgres `shop_product` |
//! | `REDIS_URL`, `REDIS_KEY_PREFIX` | `redis://127.0.0.1:6379`, `shop:` | the product cache |
//! | `JWKS_URL` | `http://127.0.0.1:8081/.well-known/jwks.json` | the user service's keys |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_CREATE_TOPICS` | `127.0.0.1:9092`, none, `false` | order events |
//! | `PRODUCT_CACHE_TTL` | `5m` | how long a cached product lives (writes invalidate at once); `0s` stores nothing, so every read misses (the benchmark's cache-miss figure) |
//! | `PRODUCT_LOCAL_CACHE_TTL` | `2s` | how long a replica keeps a product in its own memory in front of Redis (every replica's writes drop it at once over Redis pub/sub; the TTL bounds staleness if a message is lost); `0s` turns the in-process tier off |
//! | `RESERVATION_TTL` | `15m` | how long stock is held for an unconfirmed order |
//! | `RESERVATION_SWEEP_INTERVAL` | `5s` | how often lapsed holds are released |
//! | `RESERVATION_RETENTION` | `7d` | how long a finished reservation request (rejected, or every hold released, expired or returned) is kept; committed holds are kept while their order may still be refunded |
//! | `RETENTION_INTERVAL`, `RETENTION_BATCH`, `RETENTION_OUTBOX`, `RETENTION_INBOX` | `10m`, `1000`, `1d`, `7d` | pruning old rows (see `shop_kit::retention`) |

use std::time::Duration;

use shop_kit::{
    auth::AuthConfig,
    cache::RedisConfig,
    config::{HttpConfig, HumanDuration, TelemetryConfig, Vars},
    db::DatabaseConfig,
    events::KafkaConfig,
    retention::RetentionConfig,
};

pub const DEFAULT_PORT: u16 = 8082;

pub struct Config {
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub retention: RetentionConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub jwks_url: String,
    pub cache_ttl: Duration,
    pub local_cache_ttl: Duration,
    pub reservation_ttl: Duration,
    pub sweep_interval: Duration,
    pub reservation_retention: Duration,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(&Vars::from_env())
    }

    pub fn from_vars(vars: &Vars) -> anyhow::Result<Self> {
        let auth = AuthConfig::from_vars(vars)?;
        let jwks_url = auth.jwks_endpoint().to_owned();
        let positive = |name: &str, default: Duration| -> anyhow::Result<Duration> {
            let value = vars.or(name, HumanDuration(default))?.0;
            if value.is_zero() {
                return Err(vars.invalid(name, "must be greater than zero").into());
            }
            Ok(value)
        };
        Ok(Self {
            http: HttpConfig::from_vars(vars, DEFAULT_PORT)?,
            telemetry: TelemetryConfig::from_vars(vars, crate::SERVICE)?,
            database: DatabaseConfig::from_vars(vars)?,
            retention: RetentionConfig::from_vars(vars)?,
            redis: RedisConfig::from_vars(vars)?,
            auth,
            kafka: KafkaConfig::from_vars(vars)?,
            jwks_url,
            cache_ttl: vars.or("PRODUCT_CACHE_TTL", HumanDuration(Duration::from_secs(300)))?.0,
            local_cache_ttl: vars.or("PRODUCT_LOCAL_CACHE_TTL", HumanDuration(Duration::from_secs(2)))?.0,
            reservation_ttl: positive("RESERVATION_TTL", Duration::from_secs(900))?,
            sweep_interval: positive("RESERVATION_SWEEP_INTERVAL", Duration::from_secs(5))?,
            reservation_retention: positive("RESERVATION_RETENTION", Duration::from_secs(7 * 86_400))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_variable() {
        let base = Vars::from_pairs([("DATABASE_URL", "postgres://h/shop_product")]);
        assert!(Config::from_vars(&base).is_ok());
        for (name, value) in [
            ("RESERVATION_TTL", "0s"),
            ("RESERVATION_TTL", "soon"),
            ("PRODUCT_CACHE_TTL", "5"),
            ("PRODUCT_LOCAL_CACHE_TTL", "often"),
            ("RESERVATION_SWEEP_INTERVAL", "0ms"),
        ] {
            let error =
                Config::from_vars(&base.clone().with(name, value)).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(name), "case {name}={value}: {error:?}");
        }
        assert!(Config::from_vars(&Vars::default()).err().unwrap().to_string().contains("DATABASE_URL"));
        let uncached = Config::from_vars(&base.clone().with("PRODUCT_CACHE_TTL", "0s")).unwrap();
        assert!(uncached.cache_ttl.is_zero(), "0s turns the cache's stores off");
    }
}
