//! The notification service's configuration, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | `127.0.0.1:8086` | REST + gRPC |
//! | `DATABASE_URL` | required | Postgres `shop_notification` |
//! | `JWKS_URL` | `http://127.0.0.1:8081/.well-known/jwks.json` | the user service's keys |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_CREATE_TOPICS` | `127.0.0.1:9092`, none, `false` | events |
//! | `SMTP_URL` | unset (log channel) | `smtp://host:port` of the mail relay |
//! | `SMTP_FROM` | `Shop <no-reply@shop.local>` | the sender |
//! | `NOTIFICATION_MAX_ATTEMPTS` | `5` | delivery attempts before a notification is marked failed |
//! | `RETENTION_INTERVAL`, `RETENTION_BATCH`, `RETENTION_OUTBOX`, `RETENTION_INBOX` | `10m`, `1000`, `1d`, `7d` | pruning old rows (see `shop_kit::retention`) |

use shop_kit::{
    auth::AuthConfig,
    config::{HttpConfig, TelemetryConfig, Vars},
    db::DatabaseConfig,
    events::KafkaConfig,
    retention::RetentionConfig,
};

pub const DEFAULT_PORT: u16 = 8086;

/// Where the SMTP relay is.
#[derive(Clone, Debug)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub from: String,
}

pub struct Config {
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub retention: RetentionConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub jwks_url: String,
    pub smtp: Option<SmtpConfig>,
    pub max_attempts: u32,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(&Vars::from_env())
    }

    pub fn from_vars(vars: &Vars) -> anyhow::Result<Self> {
        let auth = AuthConfig::from_vars(vars)?;
        let jwks_url = auth.jwks_endpoint().to_owned();
        let from = vars.raw("SMTP_FROM").unwrap_or("Shop <no-reply@shop.local>").to_owned();
        if from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(vars.invalid("SMTP_FROM", "must be an address like Shop <no-reply@example.com>").into());
        }
        let smtp = match vars.raw("SMTP_URL") {
            None => None,
            Some(url) => {
                let rest =
                    url.strip_prefix("smtp://").ok_or_else(|| vars.invalid("SMTP_URL", "must be smtp://host:port"))?;
                let (host, port) = rest.trim_end_matches('/').rsplit_once(':').unwrap_or((rest, "25"));
                let port = port.parse().map_err(|_| vars.invalid("SMTP_URL", "the port must be a number"))?;
                Some(SmtpConfig { host: host.to_owned(), port, from: from.clone() })
            }
        };
        let max_attempts: u32 = vars.or("NOTIFICATION_MAX_ATTEMPTS", 5)?;
        if !(1..=20).contains(&max_attempts) {
            return Err(vars.invalid("NOTIFICATION_MAX_ATTEMPTS", "must be between 1 and 20").into());
        }
        Ok(Self {
            http: HttpConfig::from_vars(vars, DEFAULT_PORT)?,
            telemetry: TelemetryConfig::from_vars(vars, crate::SERVICE)?,
            database: DatabaseConfig::from_vars(vars)?,
            retention: RetentionConfig::from_vars(vars)?,
            auth,
            kafka: KafkaConfig::from_vars(vars)?,
            jwks_url,
            smtp,
            max_attempts,
        })
    }
}
