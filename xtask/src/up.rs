//! `cargo xtask up`: the whole platform on this machine.
//!
//! Uses Postgres and Redis at their configured URLs (starting the local servers if they are
//! installed but stopped), a Kafka-protocol broker (`KAFKA_BROKERS`, or a local tansu with
//! sqlite storage under target/shop-dev), creates the databases, builds and starts every
//! service (each applies its own migrations; see [`crate::platform`]), waits until each is
//! ready, prints the URLs and a first request, and streams the logs with a service prefix.
//! Ctrl-C stops everything it started, and nothing else: the services and the broker run in
//! process groups of their own, so the terminal's Ctrl-C reaches only `up`, which sends
//! SIGTERM to every service, waits for them (killing any still running after 25 s), and
//! stops the broker last. A second Ctrl-C kills everything at once. It prints how long the
//! stop took and which service, if any, had to be killed. A second `up` while one runs says
//! so and exits.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    infra::{self, Started},
    observe::Prometheus,
    platform::{self, Instance},
    services::{self, Service},
};

/// `cargo xtask up [--observe]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Also run Prometheus (Debian's package) on 127.0.0.1:9090, scraping the six services
    /// with the chart's recording rules and alerts loaded.
    #[arg(long)]
    pub(crate) observe: bool,
}

/// Where `up --observe` serves Prometheus.
const PROMETHEUS_PORT: u16 = 9090;

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
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
    let result = start_and_wait(&dir, args.observe, &mut started, &mut children, &stop_rx);
    eprintln!(
        "\nxtask: stopping {} service(s), then what `up` started (Ctrl-C again kills everything at once)",
        children.len()
    );
    let stopped = platform::stop_all(children, false, Some(&stop_rx));
    let forced = stopped.forced || stop_rx.try_recv().is_ok();
    let broker_started = Instant::now();
    for thing in started.into_iter().rev() {
        if forced { thing.kill() } else { thing.stop() }
    }
    let took = stopped.took + broker_started.elapsed();
    match (stopped.killed.as_slice(), forced) {
        (_, true) => eprintln!("xtask: killed everything at a second Ctrl-C, after {took:.1?}"),
        ([], false) => eprintln!("xtask: stopped in {took:.1?}; every service exited on its own"),
        (killed, false) => {
            eprintln!("xtask: stopped in {took:.1?}; killed after the grace period: {}", killed.join(", "))
        }
    }
    result
}

fn start_and_wait(
    dir: &Path,
    observe: bool,
    started: &mut Vec<Started>,
    children: &mut Vec<(&'static Service, Child)>,
    stop: &mpsc::Receiver<()>,
) -> anyhow::Result<()> {
    started.extend(infra::ensure_postgres()?);
    started.extend(infra::ensure_redis()?);
    started.extend(infra::ensure_broker(&dir.join("tansu.log"))?);
    let instance = Instance::development(signing_key(dir));
    platform::build()?;
    instance.start(children, stop)?;
    let prometheus =
        if observe { Some(Prometheus::start(&dir.join("prometheus"), PROMETHEUS_PORT, &instance)?) } else { None };
    print_welcome();
    if let Some(prometheus) = &prometheus {
        eprintln!(
            "  Prometheus     {} (the chart's rules and alerts: {}/rules, {}/alerts)\n",
            prometheus.url, prometheus.url, prometheus.url
        );
    }

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

fn print_welcome() {
    let mut table = String::from("\n  Shop is up.\n\n  service        REST + gRPC             readiness\n");
    for service in services::ALL {
        table.push_str(&format!(
            "  {:<14} http://127.0.0.1:{}   http://127.0.0.1:{}/readyz\n",
            service.name, service.port, service.port
        ));
    }
    let admin = platform::admin_email();
    let password = platform::admin_password();
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
