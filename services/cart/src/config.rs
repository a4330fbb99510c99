//! The cart service's configuration, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | `127.0.0.1:8083` | REST + gRPC |
//! | `REDIS_URL`, `REDIS_KEY_PREFIX` | `redis://127.0.0.1:6379`, `shop:` | the carts |
//! | `JWKS_URL` | `http://127.0.0.1:8081/.well-known/jwks.json` | the user service's keys |
//! | `PRODUCT_GRPC_URL` | `http://127.0.0.1:8082` | the product service |
//! | `PRODUCT_DEADLINE` | `2s` | the deadline of each call to it |
//! | `SERVICE_CLIENT_SECRET_FILE` or `SERVICE_CLIENT_SECRET` | required | this service's client secret (client id `cart`) for service tokens (ADR 0012) |
//! | `SERVICE_TOKEN_URL` | `http://127.0.0.1:8081/v1/oauth/token` | where the user service issues them |
//! | `CART_IDLE_TTL` | `7d` | a cart nobody touched for this long is gone |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_CREATE_TOPICS` | `127.0.0.1:9092`, none, `false` | OrderPlaced |
//! | `CART_MAX_LINES` | `50` | distinct products in one cart, at most 100 (`shop_proto::limits::MAX_CHECKOUT_LINES`: what one checkout and stock hold can contain) |

use std::time::Duration;

use shop_kit::{
    auth::{AuthConfig, ServiceCredentials},
    cache::RedisConfig,
    config::{HttpConfig, HumanDuration, TelemetryConfig, Vars},
    events::KafkaConfig,
};

pub const DEFAULT_PORT: u16 = 8083;

pub struct Config {
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub jwks_url: String,
    pub product_url: String,
    pub product_deadline: Duration,
    pub idle_ttl: Duration,
    pub max_lines: u32,
    pub service_credentials: ServiceCredentials,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(&Vars::from_env())
    }

    pub fn from_vars(vars: &Vars) -> anyhow::Result<Self> {
        let auth = AuthConfig::from_vars(vars)?;
        let jwks_url = auth.jwks_endpoint().to_owned();
        let product_url = vars.raw("PRODUCT_GRPC_URL").unwrap_or("http://127.0.0.1:8082").to_owned();
        if !(product_url.starts_with("http://") || product_url.starts_with("https://")) {
            return Err(vars.invalid("PRODUCT_GRPC_URL", "must be an http:// or https:// URL").into());
        }
        let product_deadline = vars.or("PRODUCT_DEADLINE", HumanDuration(Duration::from_secs(2)))?.0;
        let idle_ttl = vars.or("CART_IDLE_TTL", HumanDuration(Duration::from_secs(7 * 86_400)))?.0;
        if product_deadline.is_zero() {
            return Err(vars.invalid("PRODUCT_DEADLINE", "must be greater than zero").into());
        }
        if idle_ttl < Duration::from_secs(1) {
            return Err(vars.invalid("CART_IDLE_TTL", "must be at least 1s").into());
        }
        let max_lines: u32 = vars.or("CART_MAX_LINES", 50)?;
        let most = shop_proto::limits::MAX_CHECKOUT_LINES;
        if !(1..=most).contains(&usize::try_from(max_lines).unwrap_or(usize::MAX)) {
            return Err(vars
                .invalid("CART_MAX_LINES", format!("must be between 1 and {most} (what one checkout can hold)"))
                .into());
        }
        Ok(Self {
            http: HttpConfig::from_vars(vars, DEFAULT_PORT)?,
            telemetry: TelemetryConfig::from_vars(vars, crate::SERVICE)?,
            redis: RedisConfig::from_vars(vars)?,
            auth,
            kafka: KafkaConfig::from_vars(vars)?,
            jwks_url,
            product_url,
            product_deadline,
            idle_ttl,
            max_lines,
            service_credentials: ServiceCredentials::from_vars(vars, crate::SERVICE)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_values_name_their_variable() {
        let error = Config::from_vars(&Vars::default()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(error.contains("SERVICE_CLIENT_SECRET is required"), "{error}");
        let base = Vars::default().with("SERVICE_CLIENT_SECRET", "s".repeat(32));
        assert!(Config::from_vars(&base).is_ok(), "every other setting has a default");
        for (name, value) in [
            ("SERVICE_CLIENT_SECRET", "too-short"),
            ("SERVICE_CLIENT_SECRET", "has a space but is long enough to pass"),
            ("SERVICE_TOKEN_URL", "user:8081"),
            ("PRODUCT_GRPC_URL", "product:8082"),
            ("PRODUCT_DEADLINE", "0s"),
            ("CART_IDLE_TTL", "100ms"),
            ("CART_MAX_LINES", "0"),
            ("CART_MAX_LINES", "many"),
            ("CART_MAX_LINES", "101"),
        ] {
            let error =
                Config::from_vars(&base.clone().with(name, value)).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(error.contains(name), "case {name}={value}: {error:?}");
        }
    }
}
