//! The platform as processes: one [`Instance`] of the six services, built, started on its
//! ports, waited for until ready, and stopped again. `up` runs the development instance;
//! the k6 smoke test of `test` (see [`crate::load`]) and `bench` run private ones beside it.

use std::os::unix::process::CommandExt as _;
use std::{
    fs,
    io::{BufRead as _, BufReader, Read},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    color, infra,
    services::{self, Service},
};

const ADMIN_EMAIL: &str = "admin@shop.local";
const ADMIN_PASSWORD: &str = "admin-password-change-me";

/// The services' binaries, built once.
pub(crate) fn build() -> anyhow::Result<()> {
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(crate::root()).args(["build", "--bins"]);
    for service in services::ALL {
        build.args(["-p", &service.binary()]);
    }
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("the services do not build");
    }
    Ok(())
}

/// The limits a local instance runs with (see [`Instance::spawn`]); the defaults are in
/// README's configuration table.
pub(crate) const LOAD_TEST_LIMITS: &[(&str, &str)] = &[
    ("RATE_LIMIT_REGISTER", "10000/1m"),
    ("RATE_LIMIT_LOGIN", "10000/1m"),
    ("RATE_LIMIT_REFRESH", "10000/1m"),
    ("RATE_LIMIT_CHECKOUT", "10000/1m"),
];

/// One running copy of the platform: `up`'s on the ports of docs/architecture.md, or a second one
/// (the smoke test's) on other ports with its own databases, Redis keys and topics, so both
/// can run side by side.
pub(crate) struct Instance {
    /// Added to each service's port.
    pub(crate) port_offset: u16,
    /// Prepended to each database's name after `shop_` (`shop_smoke_user`); empty for `up`.
    pub(crate) database_infix: String,
    pub(crate) topic_prefix: String,
    pub(crate) redis_prefix: String,
    pub(crate) signing_key: Option<PathBuf>,
    /// Where each service's log goes: the terminal with a prefix, or `<dir>/<service>.log`.
    pub(crate) log_dir: Option<PathBuf>,
    /// Run the release binaries (the benchmark) instead of the debug ones.
    pub(crate) release: bool,
    /// More environment for every service (after the defaults, so it wins).
    pub(crate) extra_env: Vec<(String, String)>,
    /// The broker the services use (`KAFKA_BROKERS`).
    pub(crate) brokers: String,
    /// The admin URL of the Postgres its databases live on; `None`: `SHOP_POSTGRES_URL`
    /// (chaos runs a server of its own, which it restarts).
    pub(crate) postgres_url: Option<String>,
    /// Its Redis; `None`: `REDIS_URL`.
    pub(crate) redis_url: Option<String>,
}

impl Instance {
    /// `up`'s instance: the ports of docs/architecture.md, the `shop_*` databases, logs on the
    /// terminal.
    pub(crate) fn development(signing_key: Option<PathBuf>) -> Self {
        Self {
            port_offset: 0,
            database_infix: String::new(),
            topic_prefix: String::new(),
            redis_prefix: "shop:".into(),
            signing_key,
            log_dir: None,
            release: false,
            extra_env: Vec::new(),
            brokers: infra::brokers(),
            postgres_url: None,
            redis_url: None,
        }
    }

    pub(crate) fn port(&self, service: &Service) -> u16 {
        service.port + self.port_offset
    }

    pub(crate) fn url(&self, service: &Service) -> String {
        format!("http://127.0.0.1:{}", self.port(service))
    }

    /// The admin URL of its Postgres.
    pub(crate) fn postgres_url(&self) -> String {
        self.postgres_url.clone().unwrap_or_else(infra::postgres_url)
    }

    /// The URL of its Redis.
    pub(crate) fn redis_url(&self) -> String {
        self.redis_url.clone().unwrap_or_else(infra::redis_url)
    }

    /// The services' client secrets (ADR 0012), one file per service under
    /// target/shop-dev/service-clients-<port offset>, made once with random values: the user
    /// service reads the directory (`SERVICE_CLIENTS_DIR`), each caller its own file.
    pub(crate) fn service_clients_dir(&self) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let directory = crate::state_dir().join(format!("service-clients-{}", self.port_offset));
        std::fs::create_dir_all(&directory).with_context(|| format!("cannot make {}", directory.display()))?;
        for service in services::ALL {
            let path = directory.join(service.name);
            if path.exists() {
                continue;
            }
            let mut random = [0_u8; 24];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut random)?;
            let secret: String = random.iter().map(|byte| format!("{byte:02x}")).collect();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            std::io::Write::write_all(&mut file, secret.as_bytes())?;
        }
        Ok(directory)
    }

    /// A service token of `caller` for calls to `callee`, from this instance's user service.
    pub(crate) fn service_token(&self, caller: &str, callee: &str) -> anyhow::Result<String> {
        let secret = std::fs::read_to_string(self.service_clients_dir()?.join(caller))?;
        let user = services::ALL.iter().find(|service| service.name == "user").context("no user service")?;
        let url = format!("{}/v1/oauth/token", self.url(user));
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let answer: serde_json::Value = runtime.block_on(async {
            let response = reqwest::Client::new()
                .post(&url)
                .basic_auth(caller, Some(secret.trim()))
                .form(&[("grant_type", "client_credentials"), ("audience", callee)])
                .timeout(Duration::from_secs(5))
                .send()
                .await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
            anyhow::Ok(body)
        })?;
        answer["access_token"].as_str().map(str::to_owned).context("the token answer has no access_token")
    }

    /// The URL of `service`'s database, if it has one.
    pub(crate) fn database_url(&self, service: &Service) -> Option<String> {
        self.database(service).map(|name| infra::database_url_on(&self.postgres_url(), &name))
    }

    pub(crate) fn database(&self, service: &Service) -> Option<String> {
        service.database.map(|name| match name.strip_prefix("shop_") {
            Some(rest) if !self.database_infix.is_empty() => format!("shop_{}{rest}", self.database_infix),
            _ => name.to_owned(),
        })
    }

    /// Creates the databases, starts every service, waits until each is ready and seeds an
    /// empty catalog. The children are pushed as they start, so the caller stops them even
    /// when a later one fails. Returns how long each took from spawn to ready.
    pub(crate) fn start(
        &self,
        children: &mut Vec<(&'static Service, Child)>,
        stop: &mpsc::Receiver<()>,
    ) -> anyhow::Result<Vec<Duration>> {
        let admin = self.postgres_url();
        for service in services::ALL {
            if let Some(database) = self.database(service) {
                infra::ensure_database_on(&admin, &database)?;
            }
        }
        let mut ready_after = Vec::new();
        for (index, service) in services::ALL.iter().enumerate() {
            let spawned = Instant::now();
            let child = self.spawn(service, color::SERVICES[index % color::SERVICES.len()], &[])?;
            children.push((service, child));
            if let Some((service, child)) = children.last_mut() {
                self.wait_ready(service, child, stop)?;
            }
            ready_after.push(spawned.elapsed());
        }
        if let Some(product) = services::ALL.iter().find(|service| service.name == "product")
            && let Some(database) = self.database_url(product)
        {
            crate::seed::if_empty(&database)?;
        }
        Ok(ready_after)
    }

    /// Removes what a private instance leaves: its databases, Redis keys and topics.
    pub(crate) fn remove_data(&self) -> anyhow::Result<()> {
        self.remove_stores()?;
        infra::delete_topics(&self.brokers, &self.topic_prefix)
    }

    /// Removes its databases and Redis keys (an instance with a broker of its own removes
    /// the broker's files instead of its topics).
    pub(crate) fn remove_stores(&self) -> anyhow::Result<()> {
        let admin = self.postgres_url();
        for service in services::ALL {
            if let Some(database) = self.database(service) {
                infra::psql_at(&admin, &format!(r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#))?;
            }
        }
        infra::delete_redis_keys(&self.redis_url(), &self.redis_prefix)
    }

    /// Starts one service with `overrides` on top of its environment. Its log lines on the
    /// terminal start with its name in `color` (see [`color::on_stderr`]).
    pub(crate) fn spawn(&self, service: &Service, color: &str, overrides: &[(&str, &str)]) -> anyhow::Result<Child> {
        let profile = if self.release { "release" } else { "debug" };
        let binary = crate::build_dir(profile).join(service.binary());
        let user = services::ALL.iter().find(|other| other.name == "user").map_or(8081, |user| self.port(user));
        let clients = self.service_clients_dir()?;
        let mut command = Command::new(&binary);
        // Its own process group: a terminal's Ctrl-C reaches only xtask, which stops the
        // services first and the broker last.
        command
            .process_group(0)
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.port(service)))
            .env("REDIS_URL", self.redis_url())
            .env("REDIS_KEY_PREFIX", &self.redis_prefix)
            .env("KAFKA_BROKERS", &self.brokers)
            .env("KAFKA_TOPIC_PREFIX", &self.topic_prefix)
            .env("KAFKA_CREATE_TOPICS", "true")
            .env("JWKS_URL", format!("http://127.0.0.1:{user}/.well-known/jwks.json"))
            .env("SERVICE_TOKEN_URL", format!("http://127.0.0.1:{user}/v1/oauth/token"))
            .env("SERVICE_CLIENT_SECRET_FILE", clients.join(service.name))
            .env("SERVICE_CLIENTS_DIR", &clients)
            .env("SHOP_DEV_MODE", "true")
            .env("SHOP_ADMIN_EMAIL", admin_email())
            .env("SHOP_ADMIN_PASSWORD", admin_password())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null());
        for other in services::ALL {
            command.env(format!("{}_GRPC_URL", other.name.to_uppercase()), self.url(other));
        }
        if let Some(database) = self.database_url(service) {
            command.env("DATABASE_URL", database);
        }
        if let Some(key) = &self.signing_key {
            command.env("JWT_SIGNING_KEY_FILE", key);
        }
        if self.log_dir.is_some() || !color::for_stderr() {
            // The services' log lines (tracing) are colored unless NO_COLOR says otherwise.
            command.env("NO_COLOR", "1");
        }
        // Load tests and the smoke register, log in and check out from one address, as fast
        // as they can: the per-address and per-customer limits are raised here (and in
        // staging, which runs the nightly load test) unless xtask's own environment sets them
        // (`RATE_LIMIT_REGISTER=10/1h cargo xtask up` runs with the real one).
        for (name, value) in LOAD_TEST_LIMITS {
            if std::env::var_os(name).is_none() {
                command.env(name, value);
            }
        }
        for (name, value) in &self.extra_env {
            command.env(name, value);
        }
        for (name, value) in overrides {
            command.env(name, value);
        }
        if let Some(dir) = &self.log_dir {
            let log = dir.join(format!("{}.log", service.name));
            let file = fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
            command.stdout(file.try_clone()?).stderr(file);
            return command.spawn().with_context(|| format!("cannot start {}", binary.display()));
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().with_context(|| format!("cannot start {}", binary.display()))?;
        let prefix = format!("{} ", color::on_stderr(color, &format!("{:>12} |", service.name)));
        if let Some(stdout) = child.stdout.take() {
            stream(prefix.clone(), stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            stream(prefix, stderr);
        }
        Ok(child)
    }

    /// Waits until `service` answers `/readyz` with 200; fails when it exits, when `stop`
    /// says so, or after 90 s.
    pub(crate) fn wait_ready(
        &self,
        service: &Service,
        child: &mut Child,
        stop: &mpsc::Receiver<()>,
    ) -> anyhow::Result<()> {
        let address = SocketAddr::from(([127, 0, 0, 1], self.port(service)));
        let started = Instant::now();
        let log = self.log_dir.as_ref().map_or("its log above".to_owned(), |dir| {
            format!("{}", dir.join(format!("{}.log", service.name)).display())
        });
        loop {
            if infra::http_status(address, "/readyz") == Some(200) {
                return Ok(());
            }
            // Polled often: the benchmark reports the time from start to ready.
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{} exited during start-up ({status}); see {log}", service.name);
            }
            if stop.try_recv().is_ok() {
                bail!("interrupted while waiting for {}", service.name);
            }
            if started.elapsed() > Duration::from_secs(90) {
                bail!("{} was not ready on {address} within 90s; see {log}", service.name);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

/// How long the services get to stop after SIGTERM before they are killed: above their
/// `SHUTDOWN_TIMEOUT` (20 s by default).
const STOP_GRACE: Duration = Duration::from_secs(25);

/// How a stop went.
pub(crate) struct Stopped {
    pub(crate) took: Duration,
    /// The services that had to be killed (SIGKILL).
    pub(crate) killed: Vec<&'static str>,
    /// A second Ctrl-C asked to kill everything at once.
    pub(crate) forced: bool,
}

/// Stops the children: SIGTERM to all at once, then they get [`STOP_GRACE`] together to
/// exit; any still running then is killed, and so is every one left when `interrupt` (a
/// second Ctrl-C) fires meanwhile.
pub(crate) fn stop_all(
    children: Vec<(&'static Service, Child)>,
    quiet: bool,
    interrupt: Option<&mpsc::Receiver<()>>,
) -> Stopped {
    stop_within(children, quiet, interrupt, STOP_GRACE)
}

fn stop_within(
    children: Vec<(&'static Service, Child)>,
    quiet: bool,
    interrupt: Option<&mpsc::Receiver<()>>,
    grace: Duration,
) -> Stopped {
    let started = Instant::now();
    for (_, child) in &children {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
    }
    let mut running = children;
    let mut killed = Vec::new();
    let mut forced = false;
    while !running.is_empty() {
        running.retain_mut(|(service, child)| match child.try_wait() {
            Ok(None) => true,
            Ok(Some(status)) => {
                if !quiet {
                    eprintln!("xtask: {} stopped ({status}) after {:.1?}", service.name, started.elapsed());
                }
                false
            }
            Err(_) => false,
        });
        forced = interrupt.is_some_and(|interrupt| interrupt.try_recv().is_ok());
        if forced || started.elapsed() > grace {
            for (service, mut child) in running.drain(..) {
                let _ = child.kill();
                let _ = child.wait();
                eprintln!("xtask: {} killed after {:.1?}", service.name, started.elapsed());
                killed.push(service.name);
            }
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    Stopped { took: started.elapsed(), killed, forced }
}

/// The development admin's email (`SHOP_ADMIN_EMAIL`).
pub(crate) fn admin_email() -> String {
    std::env::var("SHOP_ADMIN_EMAIL").unwrap_or_else(|_| ADMIN_EMAIL.into())
}

/// The development admin's password (`SHOP_ADMIN_PASSWORD`).
pub(crate) fn admin_password() -> String {
    std::env::var("SHOP_ADMIN_PASSWORD").unwrap_or_else(|_| ADMIN_PASSWORD.into())
}

/// Copies each line of `source` to standard error after `prefix`, on a thread of its own.
fn stream(prefix: String, source: impl Read + Send + 'static) {
    thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            eprintln!("{prefix}{line}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(script: &str) -> Child {
        Command::new("sh").args(["-c", script]).process_group(0).spawn().unwrap()
    }

    /// A child that ignores SIGTERM, returned once its trap is set (a SIGTERM that came
    /// before would end it, and the test would see a polite child).
    fn stubborn() -> Child {
        let ready =
            std::env::temp_dir().join(format!("xtask-trap-{}-{:?}", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_file(&ready);
        let child = spawn(&format!("trap '' TERM; touch '{}'; while :; do sleep 0.05; done", ready.display()));
        let started = Instant::now();
        while !ready.exists() {
            assert!(started.elapsed() < Duration::from_secs(10), "the stubborn child never set its trap");
            thread::sleep(Duration::from_millis(5));
        }
        let _ = std::fs::remove_file(&ready);
        child
    }

    #[test]
    fn a_stop_terminates_kills_what_ignores_sigterm_and_says_so() {
        let polite = spawn("exec sleep 30");
        let children = vec![(&services::ALL[0], polite), (&services::ALL[1], stubborn())];
        let stopped = stop_within(children, true, None, Duration::from_millis(500));
        assert_eq!(stopped.killed, vec![services::ALL[1].name]);
        assert!(!stopped.forced);
        assert!(stopped.took < Duration::from_secs(5), "{:?}", stopped.took);
    }

    #[test]
    fn a_second_interrupt_kills_everything_at_once() {
        let (interrupt, interrupted) = mpsc::channel();
        interrupt.send(()).unwrap();
        let stopped =
            stop_within(vec![(&services::ALL[0], stubborn())], true, Some(&interrupted), Duration::from_secs(60));
        assert!(stopped.forced);
        assert_eq!(stopped.killed, vec![services::ALL[0].name]);
        assert!(stopped.took < Duration::from_secs(5), "{:?}", stopped.took);
    }
}
