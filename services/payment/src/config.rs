//! The payment service's configuration, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | `127.0.0.1:8085` | REST + gRPC |
//! | `DATABASE_URL` | required | Postgres `shop_payment` |
//! | `JWKS_URL` | `http://127.0.0.1:8081/.well-known/jwks.json` | the user service's keys |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_CREATE_TOPICS` | `127.0.0.1:9092`, none, `false` | events |
//! | `PAYMENT_CHARGE_ATTEMPTS` | `3` | attempts at a charge that fails transiently before it is declined |
//! | `RETENTION_INTERVAL`, `RETENTION_BATCH`, `RETENTION_OUTBOX`, `RETENTION_INBOX` | `10m`, `1000`, `1d`, `7d` | pruning old rows (see `shop_kit::retention`) |

use shop_kit::{
    auth::AuthConfig,
    config::{HttpConfig, TelemetryConfig, Vars},
    db::DatabaseConfig,
    events::KafkaConfig,
    retention::RetentionConfig,
};

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
        Ok(Self {
            http: HttpConfig::from_vars(vars, DEFAULT_PORT)?,
            telemetry: TelemetryConfig::from_vars(vars, crate::SERVICE)?,
            database: DatabaseConfig::from_vars(vars)?,
            retention: RetentionConfig::from_vars(vars)?,
            auth,
            kafka: KafkaConfig::from_vars(vars)?,
            jwks_url,
            charge_attempts,
        })
    }
}
