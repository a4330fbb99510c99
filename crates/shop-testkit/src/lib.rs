//! The real-infrastructure test harness. No mocks of our own infrastructure: every test
//! talks to the real Postgres, Redis (and, for event tests, the broker), isolated so that
//! tests run in parallel and leave nothing behind.
//!
//! # Layout
//! - [`TestDb`]: a fresh Postgres database per test, dropped (with `FORCE`) when the value
//!   is dropped.
//! - [`TestRedis`]: a unique key prefix per test; its keys are deleted on drop.
//! - [`TestServer`]: a service running in-process on an ephemeral port, stopped on drop.
//! - [`eventually`]: wait for a condition with a deadline instead of a fixed sleep.
//! - [`TcpProxy`], [`TestBroker`] and [`ServiceProcess`]: fault injection, a private
//!   broker behind a proxy, and a service binary run as a child process.
//! - [`FakeProvider`]: a payment provider over HTTP whose ledger outlives the payment
//!   service, and that can be slow, fail or hang.
//! - [`standins`]: in-memory gRPC stand-ins for Shop's own services, so that a service's
//!   tests start only that service.
//!
//! Where the infrastructure lives: `TEST_DATABASE_URL` (an admin URL; default
//! `postgres://postgres@127.0.0.1:5432/postgres`) and `TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). `cargo xtask test` makes sure both are up.
#![forbid(unsafe_code)]
#![expect(clippy::expect_used, clippy::panic, reason = "test support: a broken fixture should fail the test loudly")]

mod faults;
mod otlp;
mod provider;
mod smtp;
pub mod standins;
pub mod tls;

pub use faults::{Outage, STOP_DEADLINE, ServiceProcess, TcpProxy, TestBroker, sigterm_during, through};
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use provider::{FakeProvider, Hang, Operation};
pub use smtp::{Received, SmtpSink};

use std::{future::Future, net::SocketAddr, sync::OnceLock, time::Duration};

use sqlx::{Connection as _, Executor as _, PgConnection};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Every database this harness creates starts with this; `cargo xtask test` drops any left
/// over by a killed test run.
pub const DATABASE_PREFIX: &str = "shop_test_";

/// The admin URL of the test Postgres server.
pub fn postgres_admin_url() -> String {
    std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The URL of the test Redis server.
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Installs the services' own telemetry (the production subscriber, with OpenTelemetry
/// trace ids) once per test process. `RUST_LOG` filters the logs; `warn` by default.
pub fn init_tracing() {
    static GUARD: OnceLock<Option<shop_kit::telemetry::TelemetryGuard>> = OnceLock::new();
    GUARD.get_or_init(|| {
        let config = shop_kit::config::TelemetryConfig {
            service_name: "shop-test".into(),
            log_format: shop_kit::config::LogFormat::Pretty,
            log_filter: std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            otlp_endpoint: None,
            otlp_ca: None,
        };
        shop_kit::telemetry::init(&config).ok()
    });
}

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Creates an empty database with a unique name.
    pub async fn new() -> Self {
        init_tracing();
        let admin = postgres_admin_url();
        let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::now_v7().simple());
        let mut connection = PgConnection::connect(&admin).await.expect("cannot connect to the test Postgres server");
        connection
            .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
            .await
            .expect("cannot create a test database");
        let _ = connection.close().await;
        let url = replace_database(&admin, &name);
        Self { name, url }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The URL of this test's database.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; a thread with its own runtime can block on
        // the drop without starving it.
        let dropper = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let mut connection = PgConnection::connect(&postgres_admin_url()).await.ok()?;
                connection.execute(format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str()).await.ok()?;
                connection.close().await.ok()
            })
        });
        let _ = dropper.join();
    }
}

fn replace_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_end = base.find("://").map_or(0, |at| at + 3);
    let base = match base[authority_end..].find('/') {
        Some(slash) => &base[..authority_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{database}?{query}"),
        None => format!("{base}/{database}"),
    }
}

/// A Redis key prefix that exists for one test.
#[derive(Debug)]
pub struct TestRedis {
    prefix: String,
}

impl TestRedis {
    pub fn new() -> Self {
        Self { prefix: format!("test:{}:", uuid::Uuid::now_v7().simple()) }
    }

    pub fn url(&self) -> String {
        redis_url()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }
}

impl Default for TestRedis {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(redis_url()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let keys: Vec<String> = match connection.scan_match::<_, String>(&pattern) {
            Ok(iter) => iter.collect(),
            Err(_) => return,
        };
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query(&mut connection);
        }
    }
}

use redis::Commands as _;

/// A service running in-process for one test.
pub struct TestServer {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestServer {
    /// Runs `run(shutdown)` (a bound server's run loop) in the background; `address` is the
    /// address it bound.
    pub fn spawn<F, Fut>(address: SocketAddr, run: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(run(shutdown.clone()));
        Self { address, shutdown, task: Some(task) }
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Signals shutdown and waits for the server to finish draining.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A gRPC request carrying `token` as its bearer, or anonymous.
pub fn grpc_request<T>(message: T, token: Option<&str>) -> tonic::Request<T> {
    match token {
        Some(token) => shop_kit::grpc::with_bearer(tonic::Request::new(message), token),
        None => tonic::Request::new(message),
    }
}

/// An HTTP client for tests: no proxy, short timeouts.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("cannot build the test HTTP client")
}

/// Polls `check` every `pause` (no backoff) until it returns `Some`, failing the test after
/// `deadline`: for catching a moment, such as a batch part-way through.
pub async fn watch<T, F, Fut>(what: &str, deadline: Duration, pause: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} watching for {what}");
        }
        tokio::time::sleep(pause).await;
    }
}

/// Polls `check` until it returns `Some`, failing the test after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(10);
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Stands in for the user service's token issuing: serves a JWKS and the service token
/// endpoint (`/v1/oauth/token`, shop-kit's own issuer, every service registered with a secret
/// of its own) on an ephemeral port, and mints access tokens with the same claims the user
/// service puts in them.
pub struct TestIssuer {
    key: std::sync::Arc<shop_kit::auth::SigningKey>,
    secrets: std::collections::HashMap<&'static str, String>,
    server: TestServer,
}

impl TestIssuer {
    pub async fn start() -> Self {
        init_tracing();
        let (key, _) = shop_kit::auth::SigningKey::generate().expect("cannot generate a signing key");
        let key = std::sync::Arc::new(key);
        let jwks = shop_kit::auth::Jwks { keys: vec![key.jwk()] };
        let mut clients = shop_kit::auth::service::ServiceClients::default();
        let mut secrets = std::collections::HashMap::new();
        for service in shop_kit::auth::service::SERVICES {
            let secret = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            clients.insert(service, &secret).expect("a valid test secret");
            secrets.insert(service, secret);
        }
        let issuer = std::sync::Arc::new(shop_kit::auth::service::ServiceTokenIssuer::new(
            clients,
            "shop-user",
            Duration::from_secs(300),
        ));
        let signing = std::sync::Arc::clone(&key);
        let token = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let answer = issuer.issue(&headers, &body, &signing);
            std::future::ready(match answer {
                Ok(token) => axum::response::IntoResponse::into_response(axum::Json(token)),
                Err(refusal) => axum::response::IntoResponse::into_response(refusal),
            })
        };
        let routes = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(move || std::future::ready(axum::Json(jwks.clone()))))
            .route("/v1/oauth/token", axum::routing::post(token));
        let config = shop_kit::config::HttpConfig::from_vars(
            &shop_kit::config::Vars::default().with("LISTEN_ADDR", "127.0.0.1:0"),
            0,
        )
        .expect("test HTTP config");
        let bound = shop_kit::server::Server::new("test-issuer", config)
            .rest(routes)
            .bind()
            .await
            .expect("cannot bind the JWKS");
        let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
        Self { key, secrets, server }
    }

    /// What a service that calls others needs to get its tokens here: `SERVICE_CLIENT_SECRET`
    /// (its own) and `SERVICE_TOKEN_URL`.
    pub fn client_vars(&self, service: &str) -> [(&'static str, String); 2] {
        let secret = self.secrets.get(service).expect("a service of the platform").clone();
        [("SERVICE_CLIENT_SECRET", secret), ("SERVICE_TOKEN_URL", self.server.url("/v1/oauth/token"))]
    }

    /// Writes every service's secret into a new directory as the user service reads it
    /// (`SERVICE_CLIENTS_DIR`: one file per service); the caller removes it.
    pub fn write_clients_dir(&self) -> std::path::PathBuf {
        let directory = std::env::temp_dir().join(format!("shop-service-clients-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&directory).expect("cannot make the clients directory");
        for (service, secret) in &self.secrets {
            std::fs::write(directory.join(service), secret).expect("cannot write a client secret");
        }
        directory
    }

    /// Stops serving (keys and tokens): an outage of the user service.
    pub async fn stop(self) {
        self.server.stop().await.expect("the issuer stops cleanly");
    }

    /// `vars` with [`TestIssuer::client_vars`] of `service` added.
    pub fn client(&self, service: &str, vars: shop_kit::config::Vars) -> shop_kit::config::Vars {
        self.client_vars(service).into_iter().fold(vars, |vars, (name, value)| vars.with(name, value))
    }

    /// A service token of `caller` for calls to `callee`, as the user service issues it.
    pub fn service_token(&self, caller: &str, callee: &str) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let claims = shop_kit::auth::service::ServiceClaims {
            sub: caller.to_owned(),
            iss: "shop-user".into(),
            aud: shop_kit::auth::service::audience(callee),
            iat: now,
            exp: now + 300,
            jti: uuid::Uuid::now_v7(),
        };
        self.key.sign(&claims).expect("cannot sign a test token")
    }

    /// Where services fetch the keys (`JWKS_URL`).
    pub fn jwks_url(&self) -> String {
        self.server.url("/.well-known/jwks.json")
    }

    /// A valid access token for `user_id` with `role`.
    pub fn token(&self, user_id: uuid::Uuid, role: shop_kit::auth::Role) -> String {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let claims = shop_kit::auth::Claims {
            sub: user_id,
            role,
            iss: "shop-user".into(),
            aud: "shop".into(),
            iat: now,
            exp: now + 900,
            jti: uuid::Uuid::now_v7(),
        };
        self.key.sign(&claims).expect("cannot sign a test token")
    }

    /// A customer token for a new random user; returns (user id, token).
    pub fn customer(&self) -> (uuid::Uuid, String) {
        let id = uuid::Uuid::now_v7();
        (id, self.token(id, shop_kit::auth::Role::Customer))
    }

    /// An admin token.
    pub fn admin(&self) -> String {
        self.token(uuid::Uuid::now_v7(), shop_kit::auth::Role::Admin)
    }
}

/// Checks a `/metrics` text as a scraper relies on it: every metric family has HELP text
/// before its TYPE, the process metrics and `shop_build_info` are there, and every label
/// value is lower snake case, except the HTTP methods and gRPC codes (upper case, as their
/// standards spell them) and the free-form values (routes, topics, event types, versions).
/// Panics with the offending lines.
pub fn assert_metrics_well_formed(text: &str) {
    let mut described = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if help.trim().is_empty() {
                problems.push(format!("empty HELP: {line}"));
            }
            described.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !described.contains(name) {
                problems.push(format!("no HELP before: {line}"));
            }
        } else if !line.starts_with('#')
            && let Some((_, labels)) = line.split_once('{')
        {
            let labels = labels.rsplit_once('}').map_or(labels, |(labels, _)| labels);
            for pair in labels.split("\",").filter(|pair| !pair.is_empty()) {
                let Some((key, value)) = pair.split_once("=\"") else { continue };
                let value = value.trim_end_matches('"');
                let free_form = [
                    "route",
                    "topic",
                    "type",
                    "version",
                    "commit",
                    "consumer",
                    "table",
                    "check",
                    "le",
                    "quantile",
                    "partition",
                ];
                let upper = ["method", "grpc_status"];
                let ok = if free_form.contains(&key) {
                    true
                } else if upper.contains(&key) {
                    value.bytes().all(|b| b.is_ascii_uppercase() || b == b'_') || value == "other"
                } else {
                    value.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
                };
                if !ok {
                    problems.push(format!("label {key}={value:?} is not in the house casing: {line}"));
                }
            }
        }
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
        "shop_build_info",
    ] {
        if !described.contains(name) {
            problems.push(format!("{name} is missing"));
        }
    }
    assert!(problems.is_empty(), "/metrics is not well-formed:\n{}\n\n{text}", problems.join("\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_replace_the_path_only() {
        let cases = [
            ("postgres://postgres@127.0.0.1:5432/postgres", "postgres://postgres@127.0.0.1:5432/x"),
            ("postgres://u:p@h/db?sslmode=disable", "postgres://u:p@h/x?sslmode=disable"),
            ("postgres://h:5432", "postgres://h:5432/x"),
        ];
        for (url, expected) in cases {
            assert_eq!(replace_database(url, "x"), expected, "case {url}");
        }
    }

    #[tokio::test]
    async fn databases_are_created_and_dropped() {
        let db = TestDb::new().await;
        let name = db.name().to_owned();
        let mut connection = PgConnection::connect(db.url()).await.unwrap();
        connection.execute("CREATE TABLE t (id int)").await.unwrap();
        drop(db);
        let mut admin = PgConnection::connect(&postgres_admin_url()).await.unwrap();
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
        assert_eq!(left, 0);
    }
}
