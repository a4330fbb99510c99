//! The notification service's configuration, from environment variables.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `LISTEN_ADDR` | `127.0.0.1:8086` | REST + gRPC |
//! | `DATABASE_URL` | required | Postgres `shop_notification` |
//! | `JWKS_URL` | `http://127.0.0.1:8081/.well-known/jwks.json` | the user service's keys |
//! | `KAFKA_BROKERS`, `KAFKA_TOPIC_PREFIX`, `KAFKA_CREATE_TOPICS` | `127.0.0.1:9092`, none, `false` | events |
//! | `SMTP_URL` (or `SMTP_URL_FILE`) | unset (log channel) | the mail relay, in lettre's URL forms (below) |
//! | `SMTP_CA_FILE` | none | PEM certificates to trust for the relay, besides the public roots (webpki) |
//! | `SMTP_FROM` | `Shop <no-reply@shop.local>` | the sender |
//! | `NOTIFICATION_MAX_ATTEMPTS` | `5` | delivery attempts before a notification is marked failed |
//! | `RETENTION_INTERVAL`, `RETENTION_BATCH`, `RETENTION_OUTBOX`, `RETENTION_INBOX` | `10m`, `1000`, `1d`, `7d` | pruning old rows (see `shop_kit::retention`) |

//! `SMTP_URL` forms (lettre's `from_url`): `smtp://host:25` (no TLS: a relay on the same
//! trusted network only), `smtp://host:587?tls=required` (STARTTLS, refused if the relay does
//! not offer it), `smtp://host:587?tls=opportunistic` (STARTTLS when offered),
//! `smtps://host:465` (implicit TLS). Credentials go in the user info,
//! `smtps://user:password@host` (percent-encoded), and are refused without TLS that is
//! required (plain or opportunistic would send them in the clear to a relay, or anyone in
//! between, that does not offer STARTTLS). A path names
//! the EHLO domain. Read it from a file (`SMTP_URL_FILE`) when it holds a password.

use std::time::Duration;

use lettre::{
    AsyncSmtpTransport, Tokio1Executor,
    transport::smtp::client::{Certificate, Tls, TlsParameters},
};
use secrecy::ExposeSecret as _;
use shop_kit::{
    auth::AuthConfig,
    config::{HttpConfig, TelemetryConfig, Vars},
    db::DatabaseConfig,
    events::KafkaConfig,
    retention::RetentionConfig,
};

pub const DEFAULT_PORT: u16 = 8086;

/// The mail relay: its transport (TLS and credentials as `SMTP_URL` says) and the sender.
#[derive(Clone)]
pub struct SmtpConfig {
    pub transport: AsyncSmtpTransport<Tokio1Executor>,
    pub from: String,
}

/// The longest one send may take (the SMTP client's timeout).
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// How an `SMTP_URL` asks for TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TlsMode {
    None,
    Opportunistic,
    Required,
    Implicit,
}

/// The transport `url` describes, trusting `ca` (PEM) besides the public roots.
fn smtp_transport(url: &str, ca: Option<&[u8]>) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let parsed = url::Url::parse(url).map_err(|error| error.to_string())?;
    let tls = parsed.query_pairs().find(|(key, _)| key == "tls").map(|(_, value)| value.into_owned());
    let mode = match (parsed.scheme(), tls.as_deref()) {
        ("smtp", None) => TlsMode::None,
        ("smtp", Some("opportunistic")) => TlsMode::Opportunistic,
        ("smtp", Some("required")) => TlsMode::Required,
        ("smtps", None) => TlsMode::Implicit,
        _ => return Err("must be smtp://host:port[?tls=required|opportunistic] or smtps://host:port".into()),
    };
    let credentials = !parsed.username().is_empty() || parsed.password().is_some();
    if credentials && matches!(mode, TlsMode::None | TlsMode::Opportunistic) {
        return Err("credentials need TLS: use smtps:// or ?tls=required".into());
    }
    if ca.is_some() && mode == TlsMode::None {
        return Err("SMTP_CA_FILE is set but the URL asks for no TLS: add ?tls=required or use smtps://".into());
    }
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map_err(|error| error.to_string())?;
    if let (Some(pem), Some(host)) = (ca, parsed.host_str()) {
        let certificate = Certificate::from_pem(pem).map_err(|error| format!("SMTP_CA_FILE: {error}"))?;
        let parameters = TlsParameters::builder(host.to_owned())
            .add_root_certificate(certificate)
            .build_rustls()
            .map_err(|error| format!("SMTP_CA_FILE: {error}"))?;
        builder = match mode {
            TlsMode::None => builder,
            TlsMode::Opportunistic => builder.tls(Tls::Opportunistic(parameters)),
            TlsMode::Required => builder.tls(Tls::Required(parameters)),
            TlsMode::Implicit => builder.tls(Tls::Wrapper(parameters)),
        };
    }
    Ok(builder.timeout(Some(SEND_TIMEOUT)).build())
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
        let ca = vars.ca_file("SMTP_CA_FILE")?.map(|(_, pem)| pem);
        let smtp = match vars.optional_secret("SMTP_URL")? {
            None => None,
            Some(url) => {
                // The reason never repeats the URL: it may hold a password.
                let transport = smtp_transport(url.expose_secret(), ca.as_deref()).map_err(|reason| {
                    shop_kit::config::ConfigError::Invalid {
                        name: "SMTP_URL".into(),
                        value: "(not shown)".into(),
                        reason,
                    }
                })?;
                Some(SmtpConfig { transport, from: from.clone() })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let mut vars = Vars::from_pairs([("DATABASE_URL", "postgres://localhost/shop_notification")]);
        for (name, value) in pairs {
            vars = vars.with(name, *value);
        }
        Config::from_vars(&vars).map_err(|error| error.to_string())
    }

    #[test]
    fn every_lettre_url_form_is_accepted() {
        for url in [
            "smtp://relay:25",
            "smtp://relay:587?tls=required",
            "smtp://relay:587?tls=opportunistic",
            "smtps://relay:465",
            "smtps://user:p%40ss@relay:465",
            "smtp://user:pass@relay:587?tls=required",
            "smtp://relay:25/mail.shop.example",
        ] {
            assert!(config(&[("SMTP_URL", url)]).is_ok_and(|config| config.smtp.is_some()), "{url}");
        }
        assert!(config(&[]).unwrap().smtp.is_none(), "no SMTP_URL: the log channel");
    }

    #[test]
    fn bad_urls_and_credentials_without_tls_are_refused_without_showing_the_password() {
        for (url, reason) in [
            ("http://relay:25", "must be smtp://"),
            ("smtp://relay:587?tls=sometimes", "must be smtp://"),
            ("smtp://user:hunter2@relay:25", "credentials need TLS"),
            ("smtp://user:hunter2@relay:587?tls=opportunistic", "credentials need TLS"),
            ("relay:25", "must be smtp://"),
        ] {
            let result = config(&[("SMTP_URL", url)]);
            if reason.is_empty() {
                assert!(result.is_ok(), "{url}");
                continue;
            }
            let error = result.err().unwrap_or_default();
            assert!(error.contains("SMTP_URL") && error.contains(reason), "{url}: {error}");
            assert!(!error.contains("hunter2"), "the password leaked: {error}");
        }
    }

    #[test]
    fn a_ca_file_must_hold_a_certificate() {
        let ca = std::env::temp_dir().join(format!("a-ca-{}.pem", uuid::Uuid::now_v7()));
        std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n").unwrap();
        let plain = config(&[("SMTP_URL", "smtp://relay:25"), ("SMTP_CA_FILE", ca.to_str().unwrap())]);
        let _ = std::fs::remove_file(&ca);
        assert!(
            plain.err().unwrap_or_default().contains("asks for no TLS"),
            "a CA for a relay without TLS is a mistake"
        );
        let missing = config(&[("SMTP_URL", "smtps://relay"), ("SMTP_CA_FILE", "/nonexistent/ca.pem")]);
        assert!(missing.err().unwrap_or_default().contains("SMTP_CA_FILE"));
        let file = std::env::temp_dir().join(format!("not-a-ca-{}.pem", uuid::Uuid::now_v7()));
        std::fs::write(&file, "no certificate here").unwrap();
        let garbage = config(&[("SMTP_URL", "smtps://relay"), ("SMTP_CA_FILE", file.to_str().unwrap())]);
        let _ = std::fs::remove_file(&file);
        assert!(garbage.err().unwrap_or_default().contains("SMTP_CA_FILE"));
    }
}
