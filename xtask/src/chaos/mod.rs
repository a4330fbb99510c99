//! `cargo xtask chaos`: the platform keeps its promises through failures. During a steady
//! stream of checkouts it restarts Postgres, restarts Redis, pauses the broker for 20 s and
//! SIGKILLs each of the six services once (starting it again with the same environment);
//! then it stops the load, waits until the platform is at rest (at most two minutes) and
//! checks, in the services' own databases, that every order is confirmed or cancelled, that
//! each confirmed order was charged exactly once and notified once per kind, that each
//! cancelled paid order was refunded once, and that the stock balances (the invariants are
//! listed in `invariants`). It prints the counts and exits non-zero naming each invariant
//! that does not hold. `cargo xtask test` runs it after the k6 smoke test.
//!
//! It owns everything it disrupts, so it never touches the machine's Postgres, Redis or
//! broker, nor another run: a Postgres cluster of its own (initdb, port 55432), a Redis
//! (port 56379, append-only) and a tansu broker (39092), with their data in a temporary
//! folder; the services (debug build) on ports +30000 with databases `shop_chaos_*`. All of
//! it is stopped and removed at the end, after a failure or a Ctrl-C too; the services' logs
//! stay in target/shop-dev/chaos-logs (`<service>.killed.log` is a log from before its
//! SIGKILL). A run takes about three minutes.
//!
//! # Layout
//! - `mod.rs`: the run: start, disruptions in order, settling, the report.
//! - `servers`: the private Postgres, Redis and broker, and how each is disrupted.
//! - `driver`: the buyers (reqwest), their checkouts and cancellations, what they saw.
//! - `invariants`: the SQL reads, the invariants and the counts.

mod driver;
mod invariants;
mod servers;

use std::{
    fs,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use self::{
    driver::{Tally, Targets},
    invariants::{Databases, Snapshot},
    servers::Servers,
};
use crate::{
    color,
    platform::{self, Instance},
    services::{self, Service},
};

/// Load before the first disruption, and between two.
const BETWEEN: Duration = Duration::from_secs(10);
/// Between two services' SIGKILLs.
const BETWEEN_KILLS: Duration = Duration::from_secs(4);
/// How long the broker is paused.
const BROKER_PAUSE: Duration = Duration::from_secs(20);
/// How long the platform gets to come to rest once the load stops.
const SETTLE: Duration = Duration::from_secs(120);

/// `cargo xtask chaos`.
pub(crate) fn run() -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    if ctrlc::set_handler(move || {
        flag.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(());
    })
    .is_err()
    {
        eprintln!("xtask: chaos cannot listen for Ctrl-C; an interrupted run is cleaned up by the next one");
    }
    platform::build()?;
    let started = Instant::now();
    let logs = crate::state_dir().join("chaos-logs");
    fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    let dir = std::env::temp_dir().join("shop-chaos");
    eprintln!("xtask: chaos: starting its own Postgres, Redis and broker in {}", dir.display());
    let mut servers = Servers::start(&dir)?;
    let instance = Instance {
        port_offset: 30_000,
        database_infix: "chaos_".into(),
        topic_prefix: "chaos.".into(),
        redis_prefix: "chaos:".into(),
        signing_key: signing_key(&dir),
        log_dir: Some(logs.clone()),
        release: false,
        // A checkout SIGKILLed between its reservation and its order leaves a hold with no
        // order: the sweeper releases it after this, within the settling time.
        extra_env: vec![("RESERVATION_TTL".into(), "45s".into())],
        brokers: servers::BROKER.into(),
        postgres_url: Some(Servers::postgres_url()),
        redis_url: Some(Servers::redis_url()),
    };
    let mut run = Run { instance: &instance, children: Vec::new(), stop: stop_rx, interrupted, started };
    let result = run.exercise(&mut servers);
    for (_, mut child) in run.children.drain(..) {
        let _ = child.kill();
        let _ = child.wait();
    }
    servers.stop();
    eprintln!("xtask: chaos: everything it started is stopped and removed ({:.0?} in all)", started.elapsed());
    result.with_context(|| format!("chaos failed; the services' logs are in {}", logs.display()))
}

/// The development signing key of the run (so tokens survive the user service's restart),
/// made with openssl; without it the user service makes one per start and buyers log in again.
fn signing_key(dir: &Path) -> Option<std::path::PathBuf> {
    let path = dir.join("jwt-ed25519.pem");
    Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&path)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
        .then_some(path)
}

/// One run in progress.
struct Run<'a> {
    instance: &'a Instance,
    children: Vec<(&'static Service, Child)>,
    /// Ctrl-C, for [`Instance::wait_ready`].
    stop: mpsc::Receiver<()>,
    interrupted: Arc<AtomicBool>,
    started: Instant,
}

/// A disruption done: what, and how long it took until the thing was back.
struct Disruption {
    what: String,
    took: Duration,
}

impl Run<'_> {
    fn exercise(&mut self, servers: &mut Servers) -> anyhow::Result<()> {
        self.instance.start(&mut self.children, &self.stop)?;
        for (service, child) in &self.children {
            servers.record(child.id(), &service.binary());
        }
        let url = |name: &str| {
            services::ALL.iter().find(|service| service.name == name).map(|service| self.instance.url(service))
        };
        let targets = Targets {
            user: url("user").context("no user service")?,
            product: url("product").context("no product service")?,
            cart: url("cart").context("no cart service")?,
            order: url("order").context("no order service")?,
        };
        let database = |name: &str| {
            services::ALL
                .iter()
                .find(|service| service.name == name)
                .and_then(|service| self.instance.database_url(service))
                .with_context(|| format!("no {name} database"))
        };
        let databases = Databases {
            order: database("order")?,
            payment: database("payment")?,
            notification: database("notification")?,
            product: database("product")?,
            user: database("user")?,
        };
        let mut load = driver::prepare(targets, (&platform::admin_email(), &platform::admin_password()))?;
        let stock_before = invariants::stock(&databases.product)?;
        load.start();
        self.log("checkouts started");
        let disrupted = self.disrupt(servers);
        let tally = load.stop();
        let disruptions = disrupted?;
        self.log(&format!(
            "load stopped ({} orders acknowledged); waiting for the platform to settle",
            tally.acknowledged.len()
        ));
        let settling = Instant::now();
        let mut noted = settling;
        let (snapshot, violations) = loop {
            self.check_interrupt()?;
            let snapshot = Snapshot::read(&databases)?;
            let violations = snapshot.violations(&tally.acknowledged, &tally.cancelled, &stock_before);
            if (snapshot.is_quiet() && violations.is_empty()) || settling.elapsed() > SETTLE {
                break (snapshot, violations);
            }
            if let Some((invariant, detail)) = violations.first()
                && noted.elapsed() >= Duration::from_secs(20)
            {
                self.log(&format!("not yet: {invariant}: {detail}"));
                noted = Instant::now();
            }
            self.pause(Duration::from_secs(2))?;
        };
        print_report(&snapshot, &tally, &disruptions, settling.elapsed(), self.started.elapsed());
        if violations.is_empty() {
            eprintln!("xtask: chaos: every invariant holds");
            return Ok(());
        }
        for (invariant, detail) in &violations {
            eprintln!("xtask: chaos: VIOLATED {invariant}: {detail}");
        }
        let mut names: Vec<&str> = violations.iter().map(|(invariant, _)| *invariant).collect();
        names.dedup();
        bail!("invariants violated after recovery: {}", names.join(", "))
    }

    /// The disruptions, in order, with the load running.
    fn disrupt(&mut self, servers: &mut Servers) -> anyhow::Result<Vec<Disruption>> {
        let mut done = Vec::new();
        self.pause(BETWEEN)?;
        let begun = Instant::now();
        servers.restart_postgres()?;
        done.push(self.done("Postgres restarted (pg_ctl restart -m fast)", begun));
        self.pause(BETWEEN)?;
        let begun = Instant::now();
        servers.restart_redis()?;
        done.push(self.done("Redis restarted (SIGTERM, start)", begun));
        self.pause(BETWEEN)?;
        let begun = Instant::now();
        servers.pause_broker()?;
        self.log("broker paused (SIGSTOP)");
        let paused = self.pause(BROKER_PAUSE);
        servers.resume_broker()?;
        paused?;
        done.push(self.done(&format!("broker paused {}s (SIGSTOP, SIGCONT)", BROKER_PAUSE.as_secs()), begun));
        self.pause(BETWEEN)?;
        for index in 0..self.children.len() {
            let begun = Instant::now();
            let name = self.kill_and_restart(index, servers)?;
            done.push(self.done(&format!("{name} SIGKILLed, started again, ready"), begun));
            self.pause(BETWEEN_KILLS)?;
        }
        self.pause(BETWEEN)?;
        Ok(done)
    }

    fn done(&self, what: &str, begun: Instant) -> Disruption {
        let took = begun.elapsed();
        self.log(&format!("{what} in {took:.1?}"));
        Disruption { what: what.to_owned(), took }
    }

    /// SIGKILLs the `index`th service, starts it again with the same environment and waits
    /// until it is ready; returns its name.
    fn kill_and_restart(&mut self, index: usize, servers: &Servers) -> anyhow::Result<&'static str> {
        let (service, child) = self.children.get_mut(index).context("no such service")?;
        let service: &'static Service = service;
        let _ = child.kill();
        let _ = child.wait();
        self.respawn(index, service, servers)?;
        Ok(service.name)
    }

    /// Starts the `index`th service again (its log so far kept as `<service>.killed.log`).
    fn respawn(&mut self, index: usize, service: &'static Service, servers: &Servers) -> anyhow::Result<()> {
        if let Some(logs) = &self.instance.log_dir {
            let log = logs.join(format!("{}.log", service.name));
            let _ = fs::rename(&log, logs.join(format!("{}.killed.log", service.name)));
        }
        let color = color::SERVICES[index % color::SERVICES.len()];
        let mut child = self.instance.spawn(service, color, &[])?;
        servers.record(child.id(), &service.binary());
        let ready = self.instance.wait_ready(service, &mut child, &self.stop);
        if let Some(slot) = self.children.get_mut(index) {
            *slot = (service, child);
        }
        ready
    }

    /// Waits `how_long` with the load running; a service that exits on its own meanwhile is
    /// a failure of the run.
    fn pause(&mut self, how_long: Duration) -> anyhow::Result<()> {
        let until = Instant::now() + how_long;
        while Instant::now() < until {
            self.check_interrupt()?;
            for (service, child) in &mut self.children {
                if let Ok(Some(status)) = child.try_wait() {
                    bail!("{} exited on its own ({status}); see its log", service.name);
                }
            }
            thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn check_interrupt(&self) -> anyhow::Result<()> {
        if self.interrupted.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        Ok(())
    }

    fn log(&self, what: &str) {
        let at = self.started.elapsed().as_secs();
        eprintln!("xtask: chaos {:02}:{:02} {what}", at / 60, at % 60);
    }
}

fn print_report(snapshot: &Snapshot, tally: &Tally, disruptions: &[Disruption], settled: Duration, took: Duration) {
    let mut table = String::from("\n  chaos: counts after recovery\n");
    for (what, count) in snapshot.counts() {
        table.push_str(&format!("  {what:<40} {count:>7}\n"));
    }
    table.push_str("\n  what the buyers saw\n");
    let seen = [
        ("orders acknowledged (201)", tally.acknowledged.len() as u64),
        ("  of them with a declined card", tally.declined_cards),
        ("checkouts abandoned after retries", tally.abandoned),
        ("cancellations answered 200", tally.cancelled.len() as u64),
        ("requests failed (no answer or 5xx)", tally.errors_total()),
    ];
    for (what, count) in seen {
        table.push_str(&format!("  {what:<40} {count:>7}\n"));
    }
    for (what, count) in tally.errors.iter().chain(&tally.refusals) {
        table.push_str(&format!("    {what:<38} {count:>7}\n"));
    }
    table.push_str(&format!("\n  disruptions done: {}\n", disruptions.len()));
    for disruption in disruptions {
        table.push_str(&format!("  {:<52} {:>6.1?}\n", disruption.what, disruption.took));
    }
    table.push_str(&format!("\n  settled {settled:.1?} after the load stopped; the run took {took:.0?}\n"));
    eprintln!("{table}");
}
