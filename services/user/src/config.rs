//! The user service's configuration, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | `127.0.0.1:8081` | REST + gRPC port |
//! | `DATABASE_URL` | required | Postgres `shop_user` |
//! | `REDIS_URL`, `REDIS_KEY_PREFIX` | `redis://127.0.0.1:6379`, `shop:` | login and request rate limits |
//! | `JWT_SIGNING_KEY_FILE` or `JWT_SIGNING_KEY` | required unless `SHOP_DEV_MODE=true` | Ed25519 PKCS#8 PEM; up to three one after another: the first signs, all are in the JWKS (key rotation, docs/runbook.md) |
//! | `SHOP_DEV_MODE` | `false` | allows an ephemeral generated signing key |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_CREATE_TOPICS` | `127.0.0.1:9092`, none, `false` | where `UserRegistered` goes |
//! | `ACCESS_TOKEN_TTL`, `REFRESH_TOKEN_TTL` | `15m`, `30d` | token lifetimes |
//! | `SHOP_ADMIN_EMAIL(_FILE)`, `SHOP_ADMIN_PASSWORD(_FILE)` | unset | the admin account, created or updated at start |
//! | `LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_CLIENT` | `5` | failed logins on one account from one client address per window; then that client waits (others do not) |
//! | `LOGIN_MAX_FAILURES_PER_CLIENT` | `100` | failed logins from one client address (any accounts) per window |
//! | `LOGIN_MAX_FAILURES_PER_ACCOUNT` | `50` | failed logins on one account from all addresses per window; then only addresses the account logged in from within `LOGIN_KNOWN_CLIENT_TTL` may try |
//! | `LOGIN_FAILURE_WINDOW` | `15m` | the window of the three failure limits |
//! | `LOGIN_KNOWN_CLIENT_TTL` | `30d` | how long a successful login vouches for its client address |
//! | `RATE_LIMIT_REGISTER` | `10/1h` | registrations per client address (`<count>/<period>`: a burst of count, refilling evenly) |
//! | `RATE_LIMIT_LOGIN` | `30/1m` | login attempts, right or wrong, per client address |
//! | `RATE_LIMIT_REFRESH` | `60/1m` | token refreshes per client address |
//! | `RATE_LIMIT_PASSWORD_CHANGE` | `5/15m` | password changes (right or wrong current password) per account |
//! | `RATE_LIMIT_SERVICE_TOKEN` | `60/1m` | service token requests (`POST /v1/oauth/token`), right or wrong, per client address; a service asks about once per callee every 3¾ minutes |
//! | `PASSWORD_HASH_CONCURRENCY` | `2 × cores` | argon2 hashes running at once (each takes 19 MiB) |
//! | `SERVICE_CLIENTS_DIR` | unset (no service may get a token) | a directory with one file per service that may call others (`cart`, `order`, ...), holding its client secret (32 to 256 printable characters): the `shop-service-clients` Secret mounted as a volume (ADR 0012) |
//! | `SERVICE_TOKEN_TTL` | `5m` | the lifetime of a service token (`POST /v1/oauth/token`), 1m to 1h |
//! | `RETENTION_INTERVAL`, `RETENTION_BATCH`, `RETENTION_OUTBOX`, `RETENTION_INBOX` | `10m`, `1000`, `1d`, `7d` | pruning old rows (see `shop_kit::retention`) |

use std::time::Duration;

use anyhow::Context as _;
use secrecy::SecretString;
use shop_kit::{
    auth::{AuthConfig, SigningKey, SigningKeys, service::ServiceClients},
    cache::RedisConfig,
    config::{HttpConfig, HumanDuration, TelemetryConfig, Vars},
    db::DatabaseConfig,
    events::KafkaConfig,
    ratelimit::{Rate, rate},
    retention::RetentionConfig,
};

use crate::domain::{Email, Password};

/// The service's local port.
pub const DEFAULT_PORT: u16 = 8081;

/// Where the signing key comes from.
pub enum KeyConfig {
    /// A PEM document (read from `JWT_SIGNING_KEY_FILE` or `JWT_SIGNING_KEY`).
    Pem(SecretString),
    /// Generate one at start: development only, tokens die with the process.
    GenerateForDevelopment,
}

/// The admin account from configuration.
pub struct AdminAccount {
    pub email: Email,
    pub password: Password,
}

/// Limits on failed logins (see `store::login_limiter`).
#[derive(Clone, Copy, Debug)]
pub struct LoginLimits {
    pub per_account_and_client: u32,
    pub per_client: u32,
    pub per_account: u32,
    pub window: Duration,
    pub known_client_ttl: Duration,
}

/// Request rate limits, shared by the replicas through Redis.
#[derive(Clone, Copy, Debug)]
pub struct RequestRates {
    /// Per client address.
    pub register: Rate,
    /// Per client address, right or wrong.
    pub login: Rate,
    /// Per client address.
    pub refresh: Rate,
    /// Per account.
    pub password_change: Rate,
    /// Per client address: service token requests.
    pub service_token: Rate,
}

pub struct Config {
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub database: DatabaseConfig,
    pub retention: RetentionConfig,
    pub redis: RedisConfig,
    pub auth: AuthConfig,
    pub kafka: KafkaConfig,
    pub signing_key: KeyConfig,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub admin: Option<AdminAccount>,
    pub login_limits: LoginLimits,
    pub rates: RequestRates,
    pub hash_concurrency: usize,
    /// The services that may get a service token (`SERVICE_CLIENTS_DIR`).
    pub service_clients: ServiceClients,
    pub service_token_ttl: Duration,
}

impl Config {
    /// Reads the process environment; the error names the first bad variable.
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_vars(&Vars::from_env())
    }

    pub fn from_vars(vars: &Vars) -> anyhow::Result<Self> {
        let http = HttpConfig::from_vars(vars, DEFAULT_PORT)?;
        let telemetry = TelemetryConfig::from_vars(vars, crate::SERVICE)?;
        let database = DatabaseConfig::from_vars(vars)?;
        let redis = RedisConfig::from_vars(vars)?;
        let auth = AuthConfig::from_vars(vars)?;
        let kafka = KafkaConfig::from_vars(vars)?;
        let dev_mode: bool = vars.or("SHOP_DEV_MODE", false)?;
        let signing_key = if let Some(path) = vars.raw("JWT_SIGNING_KEY_FILE") {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("configuration: JWT_SIGNING_KEY_FILE {path:?} cannot be read"))?;
            KeyConfig::Pem(SecretString::from(text))
        } else if let Some(pem) = vars.optional_secret("JWT_SIGNING_KEY")? {
            KeyConfig::Pem(pem)
        } else if dev_mode {
            KeyConfig::GenerateForDevelopment
        } else {
            anyhow::bail!(
                "configuration: JWT_SIGNING_KEY_FILE or JWT_SIGNING_KEY is required \
                 (or SHOP_DEV_MODE=true for an ephemeral development key)"
            );
        };
        // Both can come from files (`_FILE`): the chart mounts them from one Secret.
        let admin = match (vars.optional_secret("SHOP_ADMIN_EMAIL")?, vars.optional_secret("SHOP_ADMIN_PASSWORD")?) {
            (None, None) => None,
            (Some(email), Some(password)) => Some(AdminAccount {
                email: Email::parse(secrecy::ExposeSecret::expose_secret(&email))
                    .map_err(|reason| vars.invalid("SHOP_ADMIN_EMAIL", reason))?,
                password: Password::parse(secrecy::ExposeSecret::expose_secret(&password))
                    .map_err(|reason| vars.invalid("SHOP_ADMIN_PASSWORD", reason))?,
            }),
            (Some(_), None) => {
                anyhow::bail!("configuration: SHOP_ADMIN_PASSWORD is required when SHOP_ADMIN_EMAIL is set")
            }
            (None, Some(_)) => {
                anyhow::bail!("configuration: SHOP_ADMIN_EMAIL is required when SHOP_ADMIN_PASSWORD is set")
            }
        };
        let at_least_one = |name: &str, default: u32| -> anyhow::Result<u32> {
            let value: u32 = vars.or(name, default)?;
            if value == 0 {
                return Err(vars.invalid(name, "must be at least 1").into());
            }
            Ok(value)
        };
        let login_limits = LoginLimits {
            per_account_and_client: at_least_one("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_CLIENT", 5)?,
            per_client: at_least_one("LOGIN_MAX_FAILURES_PER_CLIENT", 100)?,
            per_account: at_least_one("LOGIN_MAX_FAILURES_PER_ACCOUNT", 50)?,
            window: vars.or("LOGIN_FAILURE_WINDOW", HumanDuration(Duration::from_secs(15 * 60)))?.0,
            known_client_ttl: vars.or("LOGIN_KNOWN_CLIENT_TTL", HumanDuration(Duration::from_secs(30 * 86_400)))?.0,
        };
        if login_limits.per_account < login_limits.per_account_and_client {
            return Err(vars
                .invalid("LOGIN_MAX_FAILURES_PER_ACCOUNT", "must be at least LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_CLIENT")
                .into());
        }
        let rates = RequestRates {
            register: rate(vars, "RATE_LIMIT_REGISTER", "10/1h")?,
            login: rate(vars, "RATE_LIMIT_LOGIN", "30/1m")?,
            refresh: rate(vars, "RATE_LIMIT_REFRESH", "60/1m")?,
            password_change: rate(vars, "RATE_LIMIT_PASSWORD_CHANGE", "5/15m")?,
            service_token: rate(vars, "RATE_LIMIT_SERVICE_TOKEN", "60/1m")?,
        };
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        let hash_concurrency: usize = vars.or("PASSWORD_HASH_CONCURRENCY", cores * 2)?;
        if hash_concurrency == 0 {
            return Err(vars.invalid("PASSWORD_HASH_CONCURRENCY", "must be at least 1").into());
        }
        let access_token_ttl = vars.or("ACCESS_TOKEN_TTL", HumanDuration(Duration::from_secs(15 * 60)))?.0;
        if access_token_ttl < Duration::from_secs(1) {
            return Err(vars.invalid("ACCESS_TOKEN_TTL", "must be at least 1s").into());
        }
        let service_clients = match vars.raw("SERVICE_CLIENTS_DIR") {
            Some(directory) => ServiceClients::from_dir(std::path::Path::new(directory))
                .map_err(|error| vars.invalid("SERVICE_CLIENTS_DIR", format!("{error:#}")))?,
            None => ServiceClients::default(),
        };
        let service_token_ttl = vars.or("SERVICE_TOKEN_TTL", HumanDuration(Duration::from_secs(300)))?.0;
        if !(Duration::from_secs(60)..=Duration::from_secs(3600)).contains(&service_token_ttl) {
            return Err(vars.invalid("SERVICE_TOKEN_TTL", "must be 1m to 1h").into());
        }
        Ok(Self {
            http,
            telemetry,
            database,
            retention: RetentionConfig::from_vars(vars)?,
            redis,
            auth,
            kafka,
            signing_key,
            access_token_ttl,
            refresh_token_ttl: vars.or("REFRESH_TOKEN_TTL", HumanDuration(Duration::from_secs(30 * 86_400)))?.0,
            admin,
            login_limits,
            rates,
            hash_concurrency,
            service_clients,
            service_token_ttl,
        })
    }

    /// Loads (one key or several, the first signing) or generates the signing keys.
    pub fn load_signing_keys(&self) -> anyhow::Result<SigningKeys> {
        match &self.signing_key {
            KeyConfig::Pem(pem) => SigningKeys::from_pem(secrecy::ExposeSecret::expose_secret(pem))
                .context("configuration: the JWT signing key cannot be used"),
            KeyConfig::GenerateForDevelopment => {
                let (key, _) = SigningKey::generate()?;
                tracing::warn!(
                    kid = key.kid(),
                    "SHOP_DEV_MODE: generated an ephemeral signing key; tokens will not survive a restart. \
                     Never run like this in production."
                );
                Ok(SigningKeys::single(key))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Vars {
        Vars::from_pairs([("DATABASE_URL", "postgres://postgres@127.0.0.1/shop_user"), ("SHOP_DEV_MODE", "true")])
    }

    #[test]
    fn every_bad_value_names_its_variable() {
        let cases = [
            ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
            ("SHOP_DEV_MODE", "perhaps", "SHOP_DEV_MODE"),
            ("ACCESS_TOKEN_TTL", "15", "ACCESS_TOKEN_TTL"),
            ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "0", "LOGIN_MAX_FAILURES_PER_ACCOUNT"),
            ("LOGIN_MAX_FAILURES_PER_CLIENT", "-1", "LOGIN_MAX_FAILURES_PER_CLIENT"),
            ("LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_CLIENT", "0", "LOGIN_MAX_FAILURES_PER_ACCOUNT_AND_CLIENT"),
            ("LOGIN_MAX_FAILURES_PER_ACCOUNT", "2", "LOGIN_MAX_FAILURES_PER_ACCOUNT"),
            ("RATE_LIMIT_REGISTER", "10", "RATE_LIMIT_REGISTER"),
            ("RATE_LIMIT_LOGIN", "0/1m", "RATE_LIMIT_LOGIN"),
            ("SHOP_ADMIN_EMAIL", "not-an-email", "SHOP_ADMIN"),
            ("LISTEN_ADDR", "localhost", "LISTEN_ADDR"),
            ("JWT_SIGNING_KEY_FILE", "/nonexistent/key.pem", "JWT_SIGNING_KEY_FILE"),
        ];
        for (name, value, expected) in cases {
            let error = match Config::from_vars(&base().with(name, value)) {
                Ok(_) => panic!("case {name}={value} was accepted"),
                Err(error) => error.to_string(),
            };
            assert!(error.contains(expected), "case {name}={value}: {error}");
            assert!(!error.contains('\n'), "case {name}: one line, got {error}");
        }
    }

    #[test]
    fn a_key_is_required_outside_dev_mode() {
        let vars = Vars::from_pairs([("DATABASE_URL", "postgres://h/db")]);
        let error = Config::from_vars(&vars).err().unwrap().to_string();
        assert!(error.contains("JWT_SIGNING_KEY_FILE"), "{error}");
        let config = Config::from_vars(&base()).unwrap();
        assert!(matches!(config.signing_key, KeyConfig::GenerateForDevelopment));
    }
}
