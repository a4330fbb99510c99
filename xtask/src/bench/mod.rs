//! `cargo xtask bench`: measures the platform's figures next to the limits of this machine,
//! in one run, and writes docs/performance.md.
//!
//! Everything runs on the release build: the six services as a private instance (ports
//! +20000, databases `shop_bench_*`, Redis keys `bench:*`, topics `bench.*`, a tansu broker
//! of its own on 127.0.0.1:29092, all removed afterwards) and two bare servers from this
//! binary (`bench-server axum|tonic`) that do nothing but answer, as the ceiling of what a
//! Rust HTTP/gRPC stack does here. The load generators are separate processes: oha (HTTP,
//! installed once with cargo), pgbench and redis-benchmark (the database's own ceiling),
//! `bench-grpc` (a tonic client), k6 (`load-tests/scenarios/orders.js`: orders at a fixed
//! rate, and the backlog placed while the benchmark's broker is down) and order-service's
//! `place-bench` example (the checkout statement as the service runs it). The saga's
//! timings come from the services' own rows (order created → confirmed → notification
//! stored), not from polling. Nothing here asserts a time: the figures go to the document,
//! next to their targets.

mod backlog;
mod baseline;
mod broker;
mod cart;
mod checkout;
mod generators;
mod memory;
mod orders;
mod reads;
mod report;
mod saga;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

pub(crate) use self::baseline::{GrpcArgs, ServerArgs, grpc_client, server};
use self::{
    baseline::{Stack, spawn_baseline, wait_port},
    broker::{BENCH_BROKER, Broker},
    memory::{RssSampler, rss_kib},
    report::{Report, ServiceFigures},
};
use crate::{
    infra,
    platform::{self, Instance},
    services::{self, Service},
};

const AXUM_PORT: u16 = 29_000;
const TONIC_PORT: u16 = 29_001;
/// How long each load runs.
const SECONDS: u64 = 8;
const CONNECTIONS: u32 = 32;

/// How many times each service is restarted for its start → ready figure (the median is
/// reported): one start of ~150 ms on a 2-core host shared with six services is a noisy sample.
const RESTARTS: usize = 3;

/// One row of the results table.
struct Figure {
    name: String,
    measured: String,
    baseline: String,
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
}

/// `cargo xtask bench [--only <sections>]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Run only these sections (comma-separated) and print the report instead of writing
    /// docs/performance.md, which always holds a whole run.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "SECTIONS")]
    pub(crate) only: Vec<Section>,
}

/// The parts of the run, in the order they run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Section {
    /// Product reads by id: cache hit, cache miss (next to pgbench), gRPC.
    Reads,
    /// Cart reads and writes, next to redis-benchmark.
    Cart,
    /// Order placed → confirmed → notification stored, at a fixed rate.
    Saga,
    /// A 10,000-order backlog drained after a broker outage.
    Backlog,
    /// The checkout transaction as order-service runs it, next to pgbench.
    Checkout,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let dir = crate::state_dir();
    std::fs::create_dir_all(&dir)?;
    let mut infra_started = Vec::new();
    infra_started.extend(infra::ensure_postgres()?);
    infra_started.extend(infra::ensure_redis()?);
    let result = measure(&dir, started, &args.only);
    for thing in infra_started.into_iter().rev() {
        thing.stop();
    }
    result
}

/// What one run is asked for and when it started.
struct Run<'a> {
    started: Instant,
    /// When the release build was done.
    build_done: Instant,
    /// The sections `--only` picked; empty for a whole run.
    only: &'a [Section],
}

impl Run<'_> {
    fn wants(&self, section: Section) -> bool {
        self.only.is_empty() || self.only.contains(&section)
    }

    /// Whether `--only` left some sections out (the report is then printed, not written).
    fn is_partial(&self) -> bool {
        !self.only.is_empty()
    }
}

fn measure(dir: &Path, started: Instant, only: &[Section]) -> anyhow::Result<()> {
    let oha = generators::oha()?;
    for tool in ["pgbench", "redis-benchmark"] {
        if Command::new(tool).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            bail!("{tool} is not installed (it comes with the PostgreSQL / Redis server packages)");
        }
    }
    build_release()?;
    let run = Run { started, build_done: Instant::now(), only };

    // A broker of the benchmark's own, so the backlog figure can take it down and back.
    let broker_dir = dir.join("bench-broker");
    let _ = std::fs::remove_dir_all(&broker_dir);
    std::fs::create_dir_all(&broker_dir)?;
    let broker = Broker::start(&broker_dir)?;
    let instance = Instance {
        port_offset: 20_000,
        database_infix: "bench_".into(),
        topic_prefix: "bench.".into(),
        redis_prefix: "bench:".into(),
        signing_key: None,
        log_dir: Some(dir.join("bench-logs")),
        release: true,
        extra_env: vec![("RUST_LOG".into(), "warn".into())],
        brokers: BENCH_BROKER.into(),
        postgres_url: None,
        redis_url: None,
    };
    if let Some(logs) = &instance.log_dir {
        std::fs::create_dir_all(logs)?;
    }
    instance.remove_stores()?;
    let mut processes = Processes::default();
    let result = measure_on(&instance, &oha, &broker, &mut processes, &run);
    processes.stop();
    let cleaned = instance.remove_stores();
    broker.stop();
    let _ = std::fs::remove_dir_all(&broker_dir);
    result?;
    cleaned
}

/// The release build, services first.
fn build_release() -> anyhow::Result<()> {
    eprintln!("xtask: == release build");
    // The services on their own, as the Dockerfile builds them: features unify across every
    // package of one invocation, and xtask's dependencies or order-service's dev-dependencies
    // (which the place-bench example brings in) would otherwise change the measured binaries
    // (+0.6 MB each). The tools come second and leave the services' binaries alone; cargo keeps
    // both feature sets, so a repeated run builds nothing.
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(crate::root()).args(["build", "--release", "--bins"]);
    for service in services::ALL {
        build.args(["-p", &service.binary()]);
    }
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("the release build failed");
    }
    let mut tools = Command::new(env!("CARGO"));
    tools.current_dir(crate::root()).args([
        "build",
        "--release",
        "-p",
        "xtask",
        "--bin",
        "xtask",
        "-p",
        "order-service",
        "--example",
        "place-bench",
    ]);
    if !tools.status().context("cannot run cargo build")?.success() {
        bail!("the release build of the benchmark's tools failed");
    }
    Ok(())
}

/// The processes a run starts: the services and the bare servers.
#[derive(Default)]
struct Processes {
    services: Vec<(&'static Service, Child)>,
    baselines: Vec<Child>,
}

impl Processes {
    fn stop(self) {
        platform::stop_all(self.services, true, None);
        for mut baseline in self.baselines {
            let _ = baseline.kill();
            let _ = baseline.wait();
        }
    }
}

/// Starts the instance and the bare servers, measures, and writes (or prints) the report.
fn measure_on(
    instance: &Instance,
    oha: &Path,
    broker: &Broker,
    processes: &mut Processes,
    run: &Run<'_>,
) -> anyhow::Result<()> {
    // The first start creates the databases, applies the migrations and creates the
    // topics; the figure is a restart's, as in a rollout or a scale-out (in Kubernetes
    // the migrations run in a Job before the pods start).
    let (_stop_tx, stop_rx) = mpsc::channel::<()>();
    instance.start(&mut processes.services, &stop_rx)?;
    let ready = restart_each(instance, &mut processes.services)?;
    processes.baselines.push(spawn_baseline(Stack::Axum, AXUM_PORT)?);
    processes.baselines.push(spawn_baseline(Stack::Tonic, TONIC_PORT)?);
    wait_port(AXUM_PORT)?;
    wait_port(TONIC_PORT)?;
    thread::sleep(Duration::from_secs(2));
    let pids: Vec<(&'static str, u32)> =
        processes.services.iter().map(|(service, child)| (service.name, child.id())).collect();
    let idle: Vec<(&str, u64)> = pids.iter().map(|(name, pid)| (*name, rss_kib(*pid))).collect();
    let sampler = RssSampler::start(&pids);
    let figures = run_loads(&Context::new(instance, oha)?, &mut processes.services, broker, run)?;
    let peaks = sampler.stop();
    let kib_of =
        |list: &[(&str, u64)], name: &str| list.iter().find(|(other, _)| *other == name).map_or(0, |(_, kib)| *kib);
    let services = services::ALL
        .iter()
        .zip(ready)
        .map(|(service, starts)| {
            let binary = crate::build_dir("release").join(service.binary());
            let idle_kib = kib_of(&idle, service.name);
            ServiceFigures {
                name: service.name,
                starts,
                idle_kib,
                peak_kib: kib_of(&peaks, service.name).max(idle_kib),
                binary_bytes: std::fs::metadata(binary).map(|meta| meta.len()).unwrap_or(0),
            }
        })
        .collect();
    let report = Report { figures, services, started: run.started, build_done: run.build_done }.render()?;
    if run.is_partial() {
        eprintln!("{report}\nxtask: a partial run (--only): docs/performance.md is left as it was");
        return Ok(());
    }
    let path = crate::root().join("docs/performance.md");
    std::fs::write(&path, report).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

/// Stops and starts each service [`RESTARTS`] times; returns, per service, how long each
/// start took from spawn to ready, sorted.
fn restart_each(instance: &Instance, children: &mut [(&'static Service, Child)]) -> anyhow::Result<Vec<Vec<Duration>>> {
    let mut ready = Vec::new();
    for (service, child) in children.iter_mut() {
        let mut starts = Vec::with_capacity(RESTARTS);
        for _ in 0..RESTARTS {
            starts.push(restart(instance, service, child, &[], Duration::from_secs(25))?);
        }
        starts.sort_unstable();
        ready.push(starts);
    }
    Ok(ready)
}

/// Stops `child` (SIGTERM, then SIGKILL after `grace`) and starts `service` again with
/// `overrides`; returns how long the new one took from spawn to ready.
fn restart(
    instance: &Instance,
    service: &Service,
    child: &mut Child,
    overrides: &[(&str, &str)],
    grace: Duration,
) -> anyhow::Result<Duration> {
    infra::terminate(child, grace);
    let spawned = Instant::now();
    *child = instance.spawn(service, "", overrides)?;
    let (_tx, rx) = mpsc::channel::<()>();
    instance.wait_ready(service, child, &rx)?;
    Ok(spawned.elapsed())
}

/// What every measured area needs: the running instance, the HTTP load generator, a product
/// of the seeded catalog and the databases the figures read.
struct Context<'a> {
    instance: &'a Instance,
    oha: &'a Path,
    /// A product of the seeded catalog: read by id, put in carts.
    product_id: String,
    product_db: String,
    order_db: String,
    notification_db: String,
}

impl<'a> Context<'a> {
    fn new(instance: &'a Instance, oha: &'a Path) -> anyhow::Result<Self> {
        let product_db = instance.database(service("product")?).context("the product service has a database")?;
        let product_id = infra::psql_in(
            &product_db,
            "SELECT id FROM products WHERE active AND deleted_at IS NULL ORDER BY sku LIMIT 1",
        )?;
        if product_id.is_empty() {
            bail!("the bench catalog is empty");
        }
        Ok(Self {
            instance,
            oha,
            product_id,
            product_db,
            order_db: instance.database(service("order")?).context("order has a database")?,
            notification_db: instance.database(service("notification")?).context("notification has a database")?,
        })
    }
}

/// Every section the run wants, in order.
fn run_loads(
    context: &Context<'_>,
    children: &mut [(&'static Service, Child)],
    broker: &Broker,
    run: &Run<'_>,
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    if run.wants(Section::Reads) {
        figures.extend(reads::measure(context, children)?);
    }
    if run.wants(Section::Cart) {
        figures.extend(cart::measure(context)?);
    }
    if run.wants(Section::Saga) {
        figures.extend(saga::measure(context)?);
    }
    if run.wants(Section::Backlog) {
        figures.extend(backlog::measure(context, broker)?);
    }
    if run.wants(Section::Checkout) {
        figures.extend(checkout::measure(context, children)?);
    }
    Ok(figures)
}

fn service(name: &str) -> anyhow::Result<&'static Service> {
    services::ALL.iter().find(|service| service.name == name).with_context(|| format!("no {name} service"))
}
