//! Typed configuration from environment variables (12-factor).
//!
//! Services describe their configuration as a struct and read it with a [`Vars`]: every
//! value is parsed and validated before anything binds, and the first missing or bad one
//! stops start-up with one line that names the variable, e.g.
//! `configuration: LISTEN_ADDR has an invalid value "nope": invalid socket address syntax`.
//! Secrets are read as [`SecretString`] so they never reach a log.

use std::{collections::HashMap, fmt, net::SocketAddr, str::FromStr, time::Duration};

use secrecy::SecretString;

/// A configuration value that is missing or cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration: {name} is required but not set")]
    Missing { name: String },
    #[error("configuration: {name} has an invalid value {value:?}: {reason}")]
    Invalid { name: String, value: String, reason: String },
}

/// Where configuration values come from: the process environment, or a fixed map in tests.
#[derive(Clone, Debug, Default)]
pub struct Vars {
    values: HashMap<String, String>,
}

impl Vars {
    /// A snapshot of the process environment.
    pub fn from_env() -> Self {
        Self { values: std::env::vars().collect() }
    }

    /// Fixed values, for tests and tools.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(pairs: impl IntoIterator<Item = (K, V)>) -> Self {
        Self { values: pairs.into_iter().map(|(k, v)| (k.into(), v.into())).collect() }
    }

    /// Sets one value, replacing any earlier one.
    #[must_use]
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.values.insert(name.to_owned(), value.into());
        self
    }

    /// The raw value; an empty string counts as unset.
    pub fn raw(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str).filter(|value| !value.trim().is_empty())
    }

    /// A required value, parsed.
    pub fn required<T>(&self, name: &str) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        let raw = self.raw(name).ok_or_else(|| ConfigError::Missing { name: name.to_owned() })?;
        parse(name, raw)
    }

    /// An optional value, parsed when set.
    pub fn optional<T>(&self, name: &str) -> Result<Option<T>, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        self.raw(name).map(|raw| parse(name, raw)).transpose()
    }

    /// A value with a default used when it is unset.
    pub fn or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        Ok(self.optional(name)?.unwrap_or(default))
    }

    /// A required secret.
    pub fn secret(&self, name: &str) -> Result<SecretString, ConfigError> {
        self.optional_secret(name)?.ok_or_else(|| ConfigError::Missing { name: name.to_owned() })
    }

    /// An optional secret. `<NAME>_FILE`, when set, names a file that holds it (a mounted
    /// Kubernetes Secret), and wins over `<NAME>`; one trailing newline is ignored.
    pub fn optional_secret(&self, name: &str) -> Result<Option<SecretString>, ConfigError> {
        let file_variable = format!("{name}_FILE");
        if let Some(path) = self.raw(&file_variable) {
            let content = std::fs::read_to_string(path).map_err(|error| ConfigError::Invalid {
                name: file_variable.clone(),
                value: path.to_owned(),
                reason: format!("cannot be read: {error}"),
            })?;
            let content = content.strip_suffix('\n').unwrap_or(&content);
            let content = content.strip_suffix('\r').unwrap_or(content);
            if content.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    name: file_variable,
                    value: path.to_owned(),
                    reason: "is empty".into(),
                });
            }
            return Ok(Some(SecretString::from(content.to_owned())));
        }
        Ok(self.raw(name).map(|raw| SecretString::from(raw.to_owned())))
    }

    /// A file of CA certificates (PEM) named by `name`: its path and content, `None` when
    /// unset; refused when it cannot be read or holds no certificate.
    pub fn ca_file(&self, name: &str) -> Result<Option<(std::path::PathBuf, Vec<u8>)>, ConfigError> {
        let Some(path) = self.raw(name) else { return Ok(None) };
        let pem = std::fs::read(path).map_err(|error| self.invalid(name, error.to_string()))?;
        if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
            return Err(self.invalid(name, "holds no PEM certificate"));
        }
        Ok(Some((std::path::PathBuf::from(path), pem)))
    }

    /// Rejects a value that parsed but breaks a rule of the caller's (a range, say).
    pub fn invalid(&self, name: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            name: name.to_owned(),
            value: self.raw(name).unwrap_or_default().to_owned(),
            reason: reason.into(),
        }
    }
}

fn parse<T>(name: &str, raw: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    raw.trim().parse().map_err(|error: T::Err| ConfigError::Invalid {
        name: name.to_owned(),
        value: raw.to_owned(),
        reason: error.to_string(),
    })
}

/// A duration written with a unit: `250ms`, `10s`, `5m`, `2h`, `7d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let split = text.find(|c: char| !c.is_ascii_digit()).ok_or("a unit is required (ms, s, m, h, d)")?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| "expected a whole number followed by a unit (ms, s, m, h, d)")?;
        let millis = match unit {
            "ms" => Some(number),
            "s" => number.checked_mul(1_000),
            "m" => number.checked_mul(60_000),
            "h" => number.checked_mul(3_600_000),
            "d" => number.checked_mul(86_400_000),
            _ => return Err(format!("unknown unit {unit:?} (use ms, s, m, h or d)")),
        };
        millis.map(|ms| Self(Duration::from_millis(ms))).ok_or_else(|| "duration is too large".to_owned())
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines, for a terminal.
    #[default]
    Pretty,
    /// One JSON object per line, with the trace id, for log pipelines.
    Json,
}

impl FromStr for LogFormat {
    type Err = &'static str;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.to_ascii_lowercase().as_str() {
            "pretty" | "text" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            _ => Err("expected pretty or json"),
        }
    }
}

/// Settings of the HTTP/gRPC server every service runs.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `LISTEN_ADDR`: where REST and gRPC are served (one port).
    pub listen_addr: SocketAddr,
    /// `REQUEST_TIMEOUT`: the longest a request may run before it is answered with 503.
    pub request_timeout: Duration,
    /// `BODY_LIMIT_BYTES`: the largest request body accepted (413 beyond).
    pub body_limit_bytes: usize,
    /// `SHUTDOWN_GRACE`: how long in-flight requests may finish after a stop signal (10 s by
    /// default); shorter than `shutdown_timeout`.
    pub shutdown_grace: Duration,
    /// `SHUTDOWN_TIMEOUT`: the whole stop, from the signal to the exit (20 s by default):
    /// requests, background tasks, producer flush, pool close, telemetry flush. Keep it
    /// shorter than Kubernetes' `terminationGracePeriodSeconds` minus the preStop sleep.
    pub shutdown_timeout: Duration,
    /// `TRUSTED_PROXY_HOPS`: how many proxies in front of us append to the forwarding header;
    /// 0 (the default) uses the peer address as the client address.
    pub trusted_proxy_hops: usize,
    /// `TRUSTED_PROXY_HEADER`: the header those proxies append to, `x-forwarded-for` (the
    /// default) or `forwarded` (RFC 7239). Only that one is read: a client can send the other.
    pub trusted_proxy_header: ProxyHeader,
    /// `CORS_ALLOWED_ORIGINS`: the browser origins (`https://shop.example.com`, comma
    /// separated) allowed to call this service from another origin; none by default, so
    /// browsers refuse cross-origin calls.
    pub cors_allowed_origins: Vec<String>,
    /// `METRICS_LISTEN_ADDR`: when set, `/metrics` is served on this address only (a port the
    /// edge never routes, that only Prometheus may reach) and no longer on `LISTEN_ADDR`.
    pub metrics_listen_addr: Option<SocketAddr>,
    /// `GRPC_REFLECTION`: whether gRPC server reflection is served (default true; off in prod,
    /// where no one should browse the API's internals).
    pub grpc_reflection: bool,
    /// `READYZ_DETAILS`: whether `/readyz` names each check and its state (default true); off,
    /// it answers only the status (the failing checks are still logged).
    pub readyz_details: bool,
}

impl HttpConfig {
    /// Reads the server settings; `default_port` is the service's local port.
    pub fn from_vars(vars: &Vars, default_port: u16) -> Result<Self, ConfigError> {
        let body_limit_bytes: usize = vars.or("BODY_LIMIT_BYTES", 1024 * 1024)?;
        if body_limit_bytes == 0 {
            return Err(vars.invalid("BODY_LIMIT_BYTES", "must be greater than zero"));
        }
        let shutdown_grace = vars.or("SHUTDOWN_GRACE", HumanDuration(Duration::from_secs(10)))?.0;
        let shutdown_timeout = vars.or("SHUTDOWN_TIMEOUT", HumanDuration(Duration::from_secs(20)))?.0;
        if shutdown_grace >= shutdown_timeout {
            return Err(vars.invalid("SHUTDOWN_GRACE", "must be shorter than SHUTDOWN_TIMEOUT"));
        }
        Ok(Self {
            listen_addr: vars.or("LISTEN_ADDR", SocketAddr::from(([127, 0, 0, 1], default_port)))?,
            request_timeout: vars.or("REQUEST_TIMEOUT", HumanDuration(Duration::from_secs(15)))?.0,
            body_limit_bytes,
            shutdown_grace,
            shutdown_timeout,
            trusted_proxy_hops: vars.or("TRUSTED_PROXY_HOPS", 0)?,
            trusted_proxy_header: vars.or("TRUSTED_PROXY_HEADER", ProxyHeader::XForwardedFor)?,
            cors_allowed_origins: cors_origins(vars)?,
            metrics_listen_addr: vars.optional("METRICS_LISTEN_ADDR")?,
            grpc_reflection: vars.or("GRPC_REFLECTION", true)?,
            readyz_details: vars.or("READYZ_DETAILS", true)?,
        })
    }
}

/// The header trusted proxies record the client address in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ProxyHeader {
    /// `X-Forwarded-For: client, proxy1, ...` (nginx, most ingress controllers, cloud load
    /// balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client;proto=https, for=proxy1` (RFC 7239; Envoy can be set to it).
    Forwarded,
}

impl ProxyHeader {
    pub fn name(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

impl FromStr for ProxyHeader {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err("expected x-forwarded-for or forwarded".to_owned()),
        }
    }
}

/// `CORS_ALLOWED_ORIGINS`: each an origin exactly as a browser sends it (`scheme://host` or
/// `scheme://host:port`, http or https, no path); `*` is refused (name the origins).
fn cors_origins(vars: &Vars) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = vars.raw("CORS_ALLOWED_ORIGINS") else { return Ok(Vec::new()) };
    raw.split(',')
        .map(str::trim)
        .filter(|origin| !origin.is_empty())
        .map(|origin| {
            let rest = origin.strip_prefix("https://").or_else(|| origin.strip_prefix("http://"));
            let valid = rest.is_some_and(|host| {
                !host.is_empty()
                    && host
                        .bytes()
                        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'-' | b':' | b'[' | b']'))
            });
            if valid {
                Ok(origin.to_owned())
            } else {
                Err(vars.invalid(
                    "CORS_ALLOWED_ORIGINS",
                    format!("{origin:?} is not an origin like https://shop.example.com"),
                ))
            }
        })
        .collect()
}

/// Settings of logging and tracing.
#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// The `service.name` resource attribute and log field.
    pub service_name: String,
    /// `LOG_FORMAT`: `pretty` (default) or `json`.
    pub log_format: LogFormat,
    /// `RUST_LOG`: the filter directives; `info` by default.
    pub log_filter: String,
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: where spans are exported over OTLP/gRPC; none when unset.
    /// `https://` is TLS, the collector's certificate checked for the endpoint's host.
    pub otlp_endpoint: Option<String>,
    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` (the OpenTelemetry name): the PEM CA an `https://`
    /// collector's certificate is checked against instead of the public webpki roots.
    pub otlp_ca: Option<Vec<u8>>,
}

impl TelemetryConfig {
    pub fn from_vars(vars: &Vars, service_name: &str) -> Result<Self, ConfigError> {
        let otlp_endpoint = vars.optional::<String>("OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let otlp_ca = vars.ca_file("OTEL_EXPORTER_OTLP_CERTIFICATE")?.map(|(_, pem)| pem);
        if otlp_ca.is_some() && !otlp_endpoint.as_deref().is_some_and(|endpoint| endpoint.starts_with("https://")) {
            return Err(vars.invalid(
                "OTEL_EXPORTER_OTLP_CERTIFICATE",
                "verifies nothing unless OTEL_EXPORTER_OTLP_ENDPOINT is an https:// URL",
            ));
        }
        Ok(Self {
            service_name: vars.raw("OTEL_SERVICE_NAME").unwrap_or(service_name).to_owned(),
            log_format: vars.or("LOG_FORMAT", LogFormat::Pretty)?,
            log_filter: vars.raw("RUST_LOG").unwrap_or("info").to_owned(),
            otlp_endpoint,
            otlp_ca,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_invalid_values_name_the_variable() {
        let vars = Vars::from_pairs([("LISTEN_ADDR", "nope"), ("EMPTY", "  ")]);
        let missing = vars.required::<String>("DATABASE_URL").unwrap_err();
        assert_eq!(missing.to_string(), "configuration: DATABASE_URL is required but not set");
        let blank = vars.required::<String>("EMPTY").unwrap_err();
        assert_eq!(blank, ConfigError::Missing { name: "EMPTY".into() });
        let invalid = vars.required::<SocketAddr>("LISTEN_ADDR").unwrap_err().to_string();
        assert!(invalid.starts_with("configuration: LISTEN_ADDR has an invalid value \"nope\": "), "{invalid}");
        assert!(!invalid.contains('\n'));
    }

    #[test]
    fn secrets_come_from_a_file_when_name_file_is_set() {
        use secrecy::ExposeSecret as _;
        let directory = std::env::temp_dir().join(format!("shop-kit-secret-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let file = directory.join("url");
        std::fs::write(&file, "postgres://from-file\n").unwrap();
        let path = file.to_string_lossy().into_owned();
        let vars = Vars::from_pairs([("DATABASE_URL", "postgres://from-env"), ("DATABASE_URL_FILE", path.as_str())]);
        assert_eq!(vars.secret("DATABASE_URL").unwrap().expose_secret(), "postgres://from-file");
        let plain = Vars::from_pairs([("DATABASE_URL", "postgres://from-env")]);
        assert_eq!(plain.secret("DATABASE_URL").unwrap().expose_secret(), "postgres://from-env");
        let missing = Vars::from_pairs([("REDIS_URL_FILE", "/nonexistent/shop/secret")]);
        let error = missing.optional_secret("REDIS_URL").unwrap_err().to_string();
        assert!(
            error.starts_with(
                "configuration: REDIS_URL_FILE has an invalid value \"/nonexistent/shop/secret\": cannot be read"
            ),
            "{error}"
        );
        std::fs::write(&file, "\n").unwrap();
        let empty = Vars::from_pairs([("DATABASE_URL_FILE", path.as_str())]);
        assert!(empty.secret("DATABASE_URL").unwrap_err().to_string().contains("is empty"));
        std::fs::remove_dir_all(&directory).unwrap();
    }

    #[test]
    fn durations_need_a_unit() {
        let cases = [
            ("250ms", Some(250)),
            ("10s", Some(10_000)),
            ("5m", Some(300_000)),
            ("2h", Some(7_200_000)),
            ("1d", Some(86_400_000)),
            ("10", None),
            ("s", None),
            ("1.5s", None),
            ("5y", None),
            ("-1s", None),
            ("99999999999999999999d", None),
        ];
        for (text, millis) in cases {
            let parsed = text.parse::<HumanDuration>().ok().map(|d| d.0.as_millis() as u64);
            assert_eq!(parsed, millis, "case {text:?}");
        }
    }

    #[test]
    fn http_config_defaults_and_rules() {
        let config = HttpConfig::from_vars(&Vars::default(), 8081).unwrap();
        assert_eq!(config.listen_addr, SocketAddr::from(([127, 0, 0, 1], 8081)));
        assert_eq!(config.request_timeout, Duration::from_secs(15));
        let zero = HttpConfig::from_vars(&Vars::from_pairs([("BODY_LIMIT_BYTES", "0")]), 1).unwrap_err();
        assert!(zero.to_string().contains("BODY_LIMIT_BYTES"));
        assert_eq!(
            (config.shutdown_grace, config.shutdown_timeout),
            (Duration::from_secs(10), Duration::from_secs(20))
        );
        let late = Vars::from_pairs([("SHUTDOWN_GRACE", "20s"), ("SHUTDOWN_TIMEOUT", "20s")]);
        assert!(HttpConfig::from_vars(&late, 1).unwrap_err().to_string().contains("SHUTDOWN_GRACE"));
        let format = TelemetryConfig::from_vars(&Vars::from_pairs([("LOG_FORMAT", "xml")]), "x").unwrap_err();
        assert!(format.to_string().contains("LOG_FORMAT"));
    }

    #[test]
    fn cors_origins_are_named_origins() {
        let origins = |value: &str| HttpConfig::from_vars(&Vars::from_pairs([("CORS_ALLOWED_ORIGINS", value)]), 8080);
        assert!(HttpConfig::from_vars(&Vars::default(), 8080).unwrap().cors_allowed_origins.is_empty());
        assert_eq!(
            origins("https://shop.example, http://localhost:3000").unwrap().cors_allowed_origins,
            ["https://shop.example", "http://localhost:3000"]
        );
        for bad in ["*", "shop.example", "https://shop.example/path", "ftp://shop.example", "https://"] {
            let error = origins(bad).unwrap_err().to_string();
            assert!(error.contains("CORS_ALLOWED_ORIGINS"), "{bad}: {error}");
        }
    }
}
