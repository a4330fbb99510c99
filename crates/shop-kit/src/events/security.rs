//! How the Kafka clients authenticate to the brokers and check them (ADR 0013): librdkafka's
//! `security.protocol`, SASL (SCRAM or PLAIN) with a username and password, TLS with a CA
//! file, and optionally a client certificate (mutual TLS, Strimzi's `tls` users).
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | `KAFKA_SECURITY_PROTOCOL` | `plaintext` | `plaintext`, `ssl`, `sasl_plaintext` or `sasl_ssl` |
//! | `KAFKA_SASL_MECHANISM` | `SCRAM-SHA-512` | `SCRAM-SHA-512` (Strimzi's), `SCRAM-SHA-256` or `PLAIN`; with a `sasl_*` protocol only |
//! | `KAFKA_SASL_USERNAME`, `KAFKA_SASL_PASSWORD(_FILE)` | required with `sasl_*` | the service's Kafka user (Strimzi: the KafkaUser's name and its Secret's `password`) |
//! | `KAFKA_CA_FILE` | the system's roots | PEM CA the brokers' certificates are checked against (Strimzi: `<cluster>-cluster-ca-cert`'s `ca.crt`); with `ssl`/`sasl_ssl` only |
//! | `KAFKA_CERT_FILE`, `KAFKA_KEY_FILE` | unset | a client certificate and its key (PEM), both or neither; with `ssl` only |
//!
//! The brokers' host names are always checked against their certificates
//! (`ssl.endpoint.identification.algorithm=https`).

use std::path::PathBuf;

use rdkafka::ClientConfig;
use secrecy::{ExposeSecret as _, SecretString};

use crate::config::{ConfigError, Vars};

/// librdkafka's `security.protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn parse(text: &str) -> Option<Self> {
        match text.to_ascii_lowercase().as_str() {
            "plaintext" => Some(Self::Plaintext),
            "ssl" => Some(Self::Ssl),
            "sasl_plaintext" => Some(Self::SaslPlaintext),
            "sasl_ssl" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    /// Whether the connection is TLS.
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    /// Whether the client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// SASL credentials.
#[derive(Clone)]
pub struct Sasl {
    pub mechanism: &'static str,
    pub username: String,
    password: SecretString,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// How every client of a service connects to the brokers.
#[derive(Clone, Debug)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub sasl: Option<Sasl>,
    /// `KAFKA_CA_FILE`.
    pub ca_file: Option<PathBuf>,
    /// `KAFKA_CERT_FILE` and `KAFKA_KEY_FILE`.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

impl Default for KafkaSecurity {
    fn default() -> Self {
        Self { protocol: SecurityProtocol::Plaintext, sasl: None, ca_file: None, client_certificate: None }
    }
}

impl KafkaSecurity {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        let protocol = match vars.raw("KAFKA_SECURITY_PROTOCOL") {
            None => SecurityProtocol::Plaintext,
            Some(text) => SecurityProtocol::parse(text).ok_or_else(|| {
                vars.invalid("KAFKA_SECURITY_PROTOCOL", "must be plaintext, ssl, sasl_plaintext or sasl_ssl")
            })?,
        };
        let sasl = if protocol.sasl() {
            let mechanism = match vars.raw("KAFKA_SASL_MECHANISM").unwrap_or("SCRAM-SHA-512") {
                "SCRAM-SHA-512" => "SCRAM-SHA-512",
                "SCRAM-SHA-256" => "SCRAM-SHA-256",
                "PLAIN" => "PLAIN",
                _ => {
                    return Err(vars.invalid("KAFKA_SASL_MECHANISM", "must be SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN"));
                }
            };
            Some(Sasl {
                mechanism,
                username: vars.required("KAFKA_SASL_USERNAME")?,
                password: vars.secret("KAFKA_SASL_PASSWORD")?,
            })
        } else {
            for name in
                ["KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"]
            {
                if vars.raw(name).is_some() {
                    return Err(vars.invalid(name, "needs KAFKA_SECURITY_PROTOCOL=sasl_plaintext or sasl_ssl"));
                }
            }
            None
        };
        let ca_file = vars.ca_file("KAFKA_CA_FILE")?.map(|(path, _)| path);
        if ca_file.is_some() && !protocol.tls() {
            return Err(vars.invalid("KAFKA_CA_FILE", "needs KAFKA_SECURITY_PROTOCOL=ssl or sasl_ssl"));
        }
        let client_certificate = match (vars.raw("KAFKA_CERT_FILE"), vars.raw("KAFKA_KEY_FILE")) {
            (None, None) => None,
            (Some(certificate), Some(key)) => {
                if protocol != SecurityProtocol::Ssl {
                    return Err(
                        vars.invalid("KAFKA_CERT_FILE", "a client certificate needs KAFKA_SECURITY_PROTOCOL=ssl")
                    );
                }
                for (name, path) in [("KAFKA_CERT_FILE", certificate), ("KAFKA_KEY_FILE", key)] {
                    std::fs::metadata(path).map_err(|error| vars.invalid(name, format!("cannot be read: {error}")))?;
                }
                Some((PathBuf::from(certificate), PathBuf::from(key)))
            }
            (Some(_), None) => return Err(vars.invalid("KAFKA_KEY_FILE", "is required with KAFKA_CERT_FILE")),
            (None, Some(_)) => return Err(vars.invalid("KAFKA_CERT_FILE", "is required with KAFKA_KEY_FILE")),
        };
        Ok(Self { protocol, sasl, ca_file, client_certificate })
    }

    /// Sets librdkafka's properties for this security on `config`.
    pub fn apply(&self, config: &mut ClientConfig) {
        config.set("security.protocol", self.protocol.as_str());
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism)
                .set("sasl.username", &sasl.username)
                .set("sasl.password", sasl.password.expose_secret());
        }
        if self.protocol.tls() {
            config.set("ssl.endpoint.identification.algorithm", "https");
            if let Some(path) = &self.ca_file {
                config.set("ssl.ca.location", path.to_string_lossy());
            }
            if let Some((certificate, key)) = &self.client_certificate {
                config
                    .set("ssl.certificate.location", certificate.to_string_lossy())
                    .set("ssl.key.location", key.to_string_lossy());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(pairs: &[(&str, &str)]) -> String {
        KafkaSecurity::from_vars(&Vars::from_pairs(pairs.iter().copied()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn each_setting_is_checked_against_the_protocol() {
        assert_eq!(KafkaSecurity::from_vars(&Vars::default()).unwrap().protocol, SecurityProtocol::Plaintext);
        let sasl = KafkaSecurity::from_vars(&Vars::from_pairs([
            ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("KAFKA_SASL_USERNAME", "order"),
            ("KAFKA_SASL_PASSWORD", "secret"),
        ]))
        .unwrap();
        assert_eq!(sasl.sasl.as_ref().map(|sasl| sasl.mechanism), Some("SCRAM-SHA-512"));
        assert!(!format!("{sasl:?}").contains("secret"), "the password never reaches a log");
        let mut config = ClientConfig::new();
        sasl.apply(&mut config);
        assert_eq!(config.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(config.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(config.get("ssl.endpoint.identification.algorithm"), Some("https"));
        for (pairs, name) in [
            (vec![("KAFKA_SECURITY_PROTOCOL", "tls")], "KAFKA_SECURITY_PROTOCOL"),
            (vec![("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"), ("KAFKA_SASL_PASSWORD", "x")], "KAFKA_SASL_USERNAME"),
            (vec![("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"), ("KAFKA_SASL_USERNAME", "x")], "KAFKA_SASL_PASSWORD"),
            (
                vec![
                    ("KAFKA_SECURITY_PROTOCOL", "sasl_plaintext"),
                    ("KAFKA_SASL_USERNAME", "x"),
                    ("KAFKA_SASL_PASSWORD", "x"),
                    ("KAFKA_SASL_MECHANISM", "GSSAPI"),
                ],
                "KAFKA_SASL_MECHANISM",
            ),
            (vec![("KAFKA_SASL_USERNAME", "x")], "KAFKA_SASL_USERNAME"),
            (vec![("KAFKA_CA_FILE", "/nonexistent/ca.crt"), ("KAFKA_SECURITY_PROTOCOL", "ssl")], "KAFKA_CA_FILE"),
            (vec![("KAFKA_SECURITY_PROTOCOL", "ssl"), ("KAFKA_CERT_FILE", "/etc/hostname")], "KAFKA_KEY_FILE"),
            (
                vec![
                    ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
                    ("KAFKA_SASL_USERNAME", "x"),
                    ("KAFKA_SASL_PASSWORD", "x"),
                    ("KAFKA_CERT_FILE", "/etc/hostname"),
                    ("KAFKA_KEY_FILE", "/etc/hostname"),
                ],
                "KAFKA_CERT_FILE",
            ),
        ] {
            let message = error(&pairs);
            assert!(message.contains(name), "{pairs:?}: {message:?}");
        }
    }
}
