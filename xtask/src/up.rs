//! `cargo xtask up`: the whole platform on this machine.
//!
//! Uses Postgres and Redis at their configured URLs (starting the local servers if they are
//! installed but stopped), a Kafka-protocol broker (`KAFKA_BROKERS`, or a local tansu with
//! sqlite storage under target/shop-dev), creates the databases, builds and starts every
//! service that exists (each applies its own migrations), waits until each is ready,
//! prints the URLs and a first request, and streams the logs with a service prefix.
//! Ctrl-C stops everything it started, and nothing else. A second `up` while one runs
//! says so and exits.

use std::{
    fs,
    io::{BufRead as _, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    infra::{self, Started},
    services::{self, Service},
};

const ADMIN_EMAIL: &str = "admin@shop.local";
const ADMIN_PASSWORD: &str = "admin-password-change-me";
const COLORS: &[&str] = &["\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m", "\x1b[31m"];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(extra) = args.first() {
        bail!("`up` takes no arguments (got {extra:?}); configure it with environment variables");
    }
    let dir = crate::state_dir();
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let _lock = Lock::acquire(&dir.join("up.pid"))?;
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    ctrlc::set_handler(move || {
        let _ = stop_tx.send(());
    })
    .context("cannot listen for Ctrl-C")?;

    let mut started: Vec<Started> = Vec::new();
    let mut children: Vec<(&'static Service, Child)> = Vec::new();
    let result = start_and_wait(&dir, &mut started, &mut children, &stop_rx);
    eprintln!("\nxtask: stopping {} service(s) and what `up` started", children.len());
    stop_all(children, false);
    for thing in started.into_iter().rev() {
        thing.stop();
    }
    result
}

fn start_and_wait(
    dir: &Path,
    started: &mut Vec<Started>,
    children: &mut Vec<(&'static Service, Child)>,
    stop: &mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    started.extend(infra::ensure_postgres()?);
    started.extend(infra::ensure_redis()?);
    started.extend(infra::ensure_broker(&dir.join("tansu.log"))?);
    let present = services::present();
    let instance = Instance::development(signing_key(dir));
    build(&present)?;
    instance.start(&present, children, stop)?;
    print_welcome(&present);

    loop {
        if stop.recv_timeout(Duration::from_millis(250)).is_ok() {
            return Ok(());
        }
        for (service, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                bail!("{} exited unexpectedly ({status}); see its log above", service.name);
            }
        }
    }
}

/// The development signing key under target/shop-dev, made once with openssl, so tokens
/// survive restarts of `up`. Without openssl the user service makes an ephemeral one.
fn signing_key(dir: &Path) -> Option<PathBuf> {
    let path = dir.join("jwt-ed25519.pem");
    if path.exists() {
        return Some(path);
    }
    let made = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    made.then_some(path)
}

/// The services' binaries, built once.
pub(crate) fn build(present: &[&'static Service]) -> anyhow::Result<()> {
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(crate::root()).args(["build", "--bins"]);
    for service in present {
        build.args(["-p", &service.binary()]);
    }
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("the services do not build");
    }
    Ok(())
}

/// One running copy of the platform: `up`'s on the ports of ARCHITECTURE.md, or a second one
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
}

impl Instance {
    fn development(signing_key: Option<PathBuf>) -> Self {
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
        }
    }

    pub(crate) fn port(&self, service: &Service) -> u16 {
        service.port + self.port_offset
    }

    pub(crate) fn url(&self, service: &Service) -> String {
        format!("http://127.0.0.1:{}", self.port(service))
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
        present: &[&'static Service],
        children: &mut Vec<(&'static Service, Child)>,
        stop: &mpsc::Receiver<()>,
    ) -> anyhow::Result<Vec<Duration>> {
        for service in present {
            if let Some(database) = self.database(service) {
                infra::ensure_database(&database)?;
            }
        }
        let mut ready_after = Vec::new();
        for (index, service) in present.iter().enumerate() {
            let spawned = Instant::now();
            let child = self.spawn(service, COLORS[index % COLORS.len()], &[])?;
            children.push((service, child));
            if let Some((service, child)) = children.last_mut() {
                self.wait_ready(service, child, stop)?;
            }
            ready_after.push(spawned.elapsed());
        }
        if let Some(product) = present.iter().find(|service| service.name == "product")
            && let Some(database) = self.database(product)
        {
            crate::seed::if_empty(&database)?;
        }
        Ok(ready_after)
    }

    /// Removes what a private instance leaves: its databases, Redis keys and topics.
    pub(crate) fn remove_data(&self, present: &[&'static Service]) -> anyhow::Result<()> {
        self.remove_stores(present)?;
        infra::delete_topics(&self.brokers, &self.topic_prefix)
    }

    /// Removes its databases and Redis keys (an instance with a broker of its own removes
    /// the broker's files instead of its topics).
    pub(crate) fn remove_stores(&self, present: &[&'static Service]) -> anyhow::Result<()> {
        for service in present {
            if let Some(database) = self.database(service) {
                infra::psql(&format!(r#"DROP DATABASE IF EXISTS "{database}" WITH (FORCE)"#))?;
            }
        }
        infra::delete_redis_keys(&self.redis_prefix)
    }

    /// Starts one service with `overrides` on top of its environment.
    pub(crate) fn spawn(&self, service: &Service, color: &str, overrides: &[(&str, &str)]) -> anyhow::Result<Child> {
        let profile = if self.release { "release" } else { "debug" };
        let binary = crate::build_dir(profile).join(service.binary());
        let user = services::ALL.iter().find(|other| other.name == "user").map_or(8081, |user| self.port(user));
        let mut command = Command::new(&binary);
        command
            .env("LISTEN_ADDR", format!("127.0.0.1:{}", self.port(service)))
            .env("REDIS_URL", infra::redis_url())
            .env("REDIS_KEY_PREFIX", &self.redis_prefix)
            .env("KAFKA_BROKERS", &self.brokers)
            .env("KAFKA_TOPIC_PREFIX", &self.topic_prefix)
            .env("KAFKA_CREATE_TOPICS", "true")
            .env("JWKS_URL", format!("http://127.0.0.1:{user}/.well-known/jwks.json"))
            .env("SHOP_DEV_MODE", "true")
            .env("SHOP_ADMIN_EMAIL", admin_email())
            .env("SHOP_ADMIN_PASSWORD", admin_password())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null());
        for other in services::ALL {
            command.env(format!("{}_GRPC_URL", other.name.to_uppercase()), self.url(other));
        }
        if let Some(database) = self.database(service) {
            command.env("DATABASE_URL", infra::database_url(&database));
        }
        if let Some(key) = &self.signing_key {
            command.env("JWT_SIGNING_KEY_FILE", key);
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
        let prefix = format!("{color}{:>12} |\x1b[0m ", service.name);
        if let Some(stdout) = child.stdout.take() {
            stream(prefix.clone(), stdout);
        }
        if let Some(stderr) = child.stderr.take() {
            stream(prefix, stderr);
        }
        Ok(child)
    }

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

/// Stops the children: SIGTERM to all, then each gets up to 25 s to drain.
pub(crate) fn stop_all(children: Vec<(&'static Service, Child)>, quiet: bool) {
    for (_, child) in &children {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).stderr(Stdio::null()).status();
    }
    for (service, mut child) in children {
        infra::terminate(&mut child, Duration::from_secs(25));
        if !quiet {
            eprintln!("xtask: {} stopped", service.name);
        }
    }
}

pub(crate) fn admin_email() -> String {
    std::env::var("SHOP_ADMIN_EMAIL").unwrap_or_else(|_| ADMIN_EMAIL.into())
}

pub(crate) fn admin_password() -> String {
    std::env::var("SHOP_ADMIN_PASSWORD").unwrap_or_else(|_| ADMIN_PASSWORD.into())
}

fn stream(prefix: String, source: impl Read + Send + 'static) {
    thread::spawn(move || {
        for line in BufReader::new(source).lines().map_while(Result::ok) {
            eprintln!("{prefix}{line}");
        }
    });
}

fn print_welcome(present: &[&Service]) {
    let mut table = String::from("\n  Shop is up.\n\n  service        REST + gRPC             readiness\n");
    for service in present {
        table.push_str(&format!(
            "  {:<14} http://127.0.0.1:{}   http://127.0.0.1:{}/readyz\n",
            service.name, service.port, service.port
        ));
    }
    let admin = admin_email();
    let password = admin_password();
    table.push_str(&format!(
        "\n  broker         {}\n  admin (dev)    {admin} / {password}\n\n  Try:\n    \
         curl -s -X POST http://127.0.0.1:8081/v1/users -H 'content-type: application/json' \\\n      \
         -d '{{\"email\":\"ada@example.com\",\"password\":\"correct-horse\",\"name\":\"Ada\"}}'\n    \
         curl -s -X POST http://127.0.0.1:8081/v1/auth/login -H 'content-type: application/json' \\\n      \
         -d '{{\"email\":\"ada@example.com\",\"password\":\"correct-horse\"}}'\n\n  \
         curl -s 'http://127.0.0.1:8082/v1/products?q=lamp'\n\n  \
         OpenAPI: http://127.0.0.1:<port>/openapi.json   Ctrl-C stops everything.\n",
        infra::brokers()
    ));
    eprintln!("{table}");
}

/// One `up` at a time: a pid file, stale when its process is gone.
struct Lock {
    path: PathBuf,
}

impl Lock {
    fn acquire(path: &Path) -> anyhow::Result<Self> {
        if let Ok(text) = fs::read_to_string(path) {
            let pid = text.trim();
            if !pid.is_empty() && Path::new("/proc").join(pid).exists() && pid != std::process::id().to_string() {
                bail!("`cargo xtask up` is already running (pid {pid}); stop it with Ctrl-C in its terminal first");
            }
        }
        fs::write(path, std::process::id().to_string()).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Self { path: path.to_owned() })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
