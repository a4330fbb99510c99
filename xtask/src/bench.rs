//! `cargo xtask bench`: measures the platform's figures next to the limits of this machine,
//! in one run, and writes docs/performance.md.
//!
//! Everything runs on the release build: the six services as a private instance (ports
//! +20000, databases `shop_bench_*`, Redis keys `bench:*`, topics `bench.*`, removed
//! afterwards) and two bare servers from this binary (`bench-server axum|tonic`) that do
//! nothing but answer, as the ceiling of what a Rust HTTP/gRPC stack does here. The load
//! generators are separate processes: oha (HTTP, installed once with cargo), pgbench and
//! redis-benchmark (the database's own ceiling), `bench-grpc` (a tonic client) and k6 (the
//! checkout journey). Nothing here asserts a time: the figures go to the document, next to
//! their targets.

use std::{
    fmt::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    infra,
    services::{self, Service},
    up::{self, Instance},
};

const AXUM_PORT: u16 = 29_000;
const TONIC_PORT: u16 = 29_001;
/// How long each load runs.
const SECONDS: u64 = 8;
const CONNECTIONS: u32 = 32;

/// One row of the results table.
struct Figure {
    name: String,
    measured: String,
    baseline: String,
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if let Some(extra) = args.first() {
        bail!("`bench` takes no arguments (got {extra:?})");
    }
    let started = Instant::now();
    let dir = crate::state_dir();
    std::fs::create_dir_all(&dir)?;
    let mut infra_started = Vec::new();
    infra_started.extend(infra::ensure_postgres()?);
    infra_started.extend(infra::ensure_redis()?);
    infra_started.extend(infra::ensure_broker(&dir.join("tansu-bench.log"))?);
    let result = measure(&dir, started);
    for thing in infra_started.into_iter().rev() {
        thing.stop();
    }
    result
}

fn measure(dir: &Path, started: Instant) -> anyhow::Result<()> {
    let oha = oha()?;
    for tool in ["pgbench", "redis-benchmark"] {
        if Command::new(tool).arg("--help").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
            bail!("{tool} is not installed (it comes with the PostgreSQL / Redis server packages)");
        }
    }
    let present = services::present();
    eprintln!("xtask: == release build");
    let mut build = Command::new(env!("CARGO"));
    build.current_dir(crate::root()).args(["build", "--release", "--bins", "-p", "xtask"]);
    for service in &present {
        build.args(["-p", &service.binary()]);
    }
    if !build.status().context("cannot run cargo build")?.success() {
        bail!("the release build failed");
    }
    let build_done = Instant::now();

    let instance = Instance {
        port_offset: 20_000,
        database_infix: "bench_".into(),
        topic_prefix: "bench.".into(),
        redis_prefix: "bench:".into(),
        signing_key: None,
        log_dir: Some(dir.join("bench-logs")),
        release: true,
        extra_env: vec![("RUST_LOG".into(), "warn".into())],
    };
    if let Some(logs) = &instance.log_dir {
        std::fs::create_dir_all(logs)?;
    }
    let cleanup = || instance.remove_data(&present);
    cleanup()?;
    let (_stop_tx, stop_rx) = mpsc::channel::<()>();
    let mut children: Vec<(&'static Service, Child)> = Vec::new();
    let mut baselines: Vec<Child> = Vec::new();
    let result = (|| {
        let ready = instance.start(&present, &mut children, &stop_rx)?;
        baselines.push(spawn_baseline("axum", AXUM_PORT)?);
        baselines.push(spawn_baseline("tonic", TONIC_PORT)?);
        wait_port(AXUM_PORT)?;
        wait_port(TONIC_PORT)?;
        thread::sleep(Duration::from_secs(2));
        let pids: Vec<(&'static str, u32)> =
            children.iter().map(|(service, child)| (service.name, child.id())).collect();
        let idle: Vec<(&str, u64)> = pids.iter().map(|(name, pid)| (*name, rss_kib(*pid))).collect();
        let sampler = RssSampler::start(&pids);
        let figures = run_loads(&instance, &oha, &mut children)?;
        let peaks = sampler.stop();
        let sizes: Vec<(&str, u64)> = present
            .iter()
            .map(|service| {
                let path = crate::root().join("target/release").join(service.binary());
                (service.name, std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0))
            })
            .collect();
        write_report(&figures, &present, &ready, &idle, &peaks, &sizes, started, build_done)
    })();
    up::stop_all(children, true);
    for mut baseline in baselines {
        let _ = baseline.kill();
        let _ = baseline.wait();
    }
    let cleaned = cleanup();
    result?;
    cleaned
}

fn run_loads(
    instance: &Instance,
    oha: &Path,
    children: &mut [(&'static Service, Child)],
) -> anyhow::Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let product = service("product")?;
    let product_url = instance.url(product);
    let product_db = instance.database(product).context("the product service has a database")?;
    let id = infra::psql_in(
        &product_db,
        "SELECT id FROM products WHERE active AND deleted_at IS NULL ORDER BY sku LIMIT 1",
    )?;
    if id.is_empty() {
        bail!("the bench catalog is empty");
    }
    let product_path = format!("{product_url}/v1/products/{id}");

    eprintln!("xtask: == product read, cache hit");
    let axum = oha_max(oha, &format!("http://127.0.0.1:{AXUM_PORT}/json"), &[])?;
    let _ = oha_max(oha, &product_path, &[])?; // warm: connections, cache
    let hit = oha_max(oha, &product_path, &[])?;
    figures.push(Figure {
        name: "product read by id, cache hit (req/s)".into(),
        measured: format!("{:.0}", hit.rps),
        baseline: format!("bare axum JSON handler {:.0}", axum.rps),
        ratio: Some(hit.rps / axum.rps),
        target: "≥ 25,000 and ≥ 0.5× axum".into(),
        met: Some(hit.rps >= 25_000.0 && hit.rps >= 0.5 * axum.rps),
    });
    let fixed = oha_rate(oha, &product_path, 15_000)?;
    figures.push(Figure {
        name: "product read, cache hit, p99 at 15k req/s open loop".into(),
        measured: format!("{:.2} ms (achieved {:.0} req/s)", fixed.p99_ms, fixed.rps),
        baseline: "-".into(),
        ratio: None,
        target: "≤ 5 ms".into(),
        met: Some(fixed.p99_ms <= 5.0 && fixed.rps >= 14_000.0),
    });

    eprintln!("xtask: == product read, cache miss");
    let sql = crate::root().join("target").join("bench-select.sql");
    std::fs::write(
        &sql,
        format!(
            "SELECT p.id, p.sku, p.name, p.description, p.price_amount, p.currency, \
             ARRAY(SELECT c.slug FROM product_categories pc JOIN categories c ON c.id = pc.category_id \
             WHERE pc.product_id = p.id ORDER BY c.slug) AS categories, \
             COALESCE(i.on_hand - i.reserved, 0)::bigint AS stock_available, p.image_url, p.active, p.created_at, \
             p.updated_at FROM products p LEFT JOIN inventory i ON i.product_id = p.id \
             WHERE p.id = '{id}' AND p.deleted_at IS NULL;\n"
        ),
    )?;
    let pg_select = pgbench(&product_db, &sql, CONNECTIONS)?;
    // The same service with a cache that stores nothing: every read misses (a Redis GET
    // that finds nothing, then Postgres).
    let index = children.iter().position(|(service, _)| service.name == "product").context("product runs")?;
    {
        let (service, child) = &mut children[index];
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        infra::terminate(child, Duration::from_secs(10));
        *child = instance.spawn(service, "", &[("PRODUCT_CACHE_TTL", "0s")])?;
        let (_tx, rx) = mpsc::channel::<()>();
        instance.wait_ready(service, child, &rx)?;
    }
    let _ = oha_max(oha, &product_path, &[])?;
    let miss = oha_max(oha, &product_path, &[])?;
    let miss_fixed = oha_rate(oha, &product_path, (miss.rps * 0.5).max(100.0) as u32)?;
    figures.push(Figure {
        name: "product read by id, cache miss (req/s)".into(),
        measured: format!("{:.0}", miss.rps),
        baseline: format!("pgbench, same SELECT, {CONNECTIONS} clients: {pg_select:.0} tps"),
        ratio: Some(miss.rps / pg_select),
        target: "≥ 0.5× pgbench".into(),
        met: Some(miss.rps >= 0.5 * pg_select),
    });
    figures.push(Figure {
        name: "product read, cache miss, p99 at half that rate".into(),
        measured: format!("{:.2} ms at {:.0} req/s", miss_fixed.p99_ms, miss_fixed.rps),
        baseline: "-".into(),
        ratio: None,
        target: "≤ 15 ms".into(),
        met: Some(miss_fixed.p99_ms <= 15.0),
    });
    {
        let (service, child) = &mut children[index];
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        infra::terminate(child, Duration::from_secs(10));
        *child = instance.spawn(service, "", &[])?;
        let (_tx, rx) = mpsc::channel::<()>();
        instance.wait_ready(service, child, &rx)?;
    }

    eprintln!("xtask: == gRPC GetProduct");
    let echo = grpc_load(&format!("http://127.0.0.1:{TONIC_PORT}"), &id)?;
    let grpc = grpc_load(&format!("http://127.0.0.1:{}", instance.port(product)), &id)?;
    figures.push(Figure {
        name: "gRPC GetProduct (calls/s)".into(),
        measured: format!("{grpc:.0}"),
        baseline: format!("bare tonic unary {echo:.0}"),
        ratio: Some(grpc / echo),
        target: "≥ 0.5× tonic".into(),
        met: Some(grpc >= 0.5 * echo),
    });

    eprintln!("xtask: == cart read and write");
    let user = service("user")?;
    let cart = service("cart")?;
    let (user_id, token) = register(&instance.url(user))?;
    let auth = format!("authorization: Bearer {token}");
    let put = oha_run(
        oha,
        &format!("{}/v1/cart/items/{id}", instance.url(cart)),
        &[
            "-c",
            "8",
            "-z",
            "4s",
            "-m",
            "PUT",
            "-H",
            "content-type: application/json",
            "-d",
            r#"{"quantity":2}"#,
            "-H",
            &auth,
        ],
    )?;
    let read = oha_max(oha, &format!("{}/v1/cart", instance.url(cart)), &["-H", &auth])?;
    let key = format!("{}cart:{user_id}", instance.redis_prefix);
    let redis_read = redis_benchmark(&["HGETALL", &key])?;
    figures.push(Figure {
        name: "cart read (req/s)".into(),
        measured: format!("{:.0}", read.rps),
        baseline: format!("redis-benchmark HGETALL of the same cart {redis_read:.0}"),
        ratio: Some(read.rps / redis_read),
        target: "(reported)".into(),
        met: None,
    });
    let redis_write = redis_benchmark(&["HSET", &format!("{}bench-probe", instance.redis_prefix), "line", "x"])?;
    figures.push(Figure {
        name: "cart write, PUT item (req/s)".into(),
        measured: format!("{:.0} (8 clients; each prices the line over gRPC)", put.rps),
        baseline: format!("redis-benchmark HSET {redis_write:.0}"),
        ratio: Some(put.rps / redis_write),
        target: "(reported)".into(),
        met: None,
    });

    eprintln!("xtask: == checkout (k6)");
    let order_db = instance.database(service("order")?).context("order has a database")?;
    let checkout = k6_checkout(instance)?;
    // The pgbench rows land in the order database's outbox: stop the service first, so its
    // relay does not try to publish them.
    if let Some((_, child)) = children.iter_mut().find(|(service, _)| service.name == "order") {
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        infra::terminate(child, Duration::from_secs(10));
    }
    let pg_checkout = pgbench_checkout(&order_db)?;
    figures.push(Figure {
        name: "checkout, POST /v1/orders (orders/s, 8 buyers)".into(),
        measured: format!("{:.1} orders/s, p99 {:.1} ms", checkout.orders_per_second, checkout.place_p99_ms),
        baseline: format!("pgbench, the order transaction, 8 clients: {pg_checkout:.0} tps"),
        ratio: Some(checkout.orders_per_second / pg_checkout),
        target: "≥ 0.9× pgbench; p99 ≤ 50 ms at 1,000/s".into(),
        met: Some(checkout.orders_per_second >= 0.9 * pg_checkout && checkout.place_p99_ms <= 50.0),
    });
    figures.push(Figure {
        name: "order placed → confirmed (saga, 2 Kafka hops)".into(),
        measured: format!("p50 {:.0} ms, p99 {:.0} ms", checkout.confirm_p50_ms, checkout.confirm_p99_ms),
        baseline: "-".into(),
        ratio: None,
        target: "p50 ≤ 30 ms, p99 ≤ 150 ms (to notification)".into(),
        met: Some(checkout.confirm_p50_ms <= 30.0 && checkout.confirm_p99_ms <= 150.0),
    });
    Ok(figures)
}

fn service(name: &str) -> anyhow::Result<&'static Service> {
    services::ALL.iter().find(|service| service.name == name).with_context(|| format!("no {name} service"))
}

// ---- load generators

struct HttpResult {
    rps: f64,
    p99_ms: f64,
}

/// oha, installed once into ~/.cargo/bin.
fn oha() -> anyhow::Result<PathBuf> {
    let cargo_home = std::env::var("CARGO_HOME")
        .unwrap_or_else(|_| format!("{}/.cargo", std::env::var("HOME").unwrap_or_else(|_| "/root".into())));
    let path = PathBuf::from(cargo_home).join("bin").join("oha");
    if path.exists() {
        return Ok(path);
    }
    eprintln!("xtask: installing the oha load generator (once per machine, a few minutes)");
    let status = Command::new(env!("CARGO")).args(["install", "oha", "--version", "1.16.0", "--locked"]).status()?;
    if !status.success() {
        bail!("cargo install oha failed");
    }
    Ok(path)
}

/// Closed loop: as fast as `CONNECTIONS` connections go.
fn oha_max(oha: &Path, url: &str, extra: &[&str]) -> anyhow::Result<HttpResult> {
    let connections = CONNECTIONS.to_string();
    let duration = format!("{SECONDS}s");
    let mut args = vec!["-c", &connections, "-z", &duration];
    args.extend_from_slice(extra);
    oha_run(oha, url, &args)
}

/// Open loop at `rate` requests per second, latency measured from when each was due.
fn oha_rate(oha: &Path, url: &str, rate: u32) -> anyhow::Result<HttpResult> {
    let rate = rate.to_string();
    let connections = CONNECTIONS.to_string();
    let duration = format!("{SECONDS}s");
    oha_run(oha, url, &["-c", &connections, "-z", &duration, "-q", &rate, "--latency-correction"])
}

fn oha_run(oha: &Path, url: &str, args: &[&str]) -> anyhow::Result<HttpResult> {
    let output = Command::new(oha)
        .args(args)
        .args(["--no-tui", "--output-format", "json", url])
        .output()
        .with_context(|| format!("cannot run {}", oha.display()))?;
    if !output.status.success() {
        bail!("oha failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).context("oha printed no JSON")?;
    let ok: u64 = json["statusCodeDistribution"]
        .as_object()
        .map(|codes| codes.iter().filter(|(code, _)| code.starts_with('2')).filter_map(|(_, n)| n.as_u64()).sum())
        .unwrap_or(0);
    let total: u64 = json["statusCodeDistribution"]
        .as_object()
        .map(|codes| codes.values().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    if total == 0 || ok * 100 < total * 99 {
        bail!("oha against {url}: {ok} of {total} answers were 2xx");
    }
    let seconds = json["summary"]["total"].as_f64().unwrap_or(SECONDS as f64).max(0.001);
    Ok(HttpResult {
        rps: ok as f64 / seconds,
        p99_ms: json["latencyPercentiles"]["p99"].as_f64().unwrap_or(f64::NAN) * 1000.0,
    })
}

/// pgbench running `script` with `clients` connections; returns transactions per second.
fn pgbench(database: &str, script: &Path, clients: u32) -> anyhow::Result<f64> {
    let output = Command::new("pgbench")
        .args(["-n", "-c", &clients.to_string(), "-j", "2", "-T", &SECONDS.to_string(), "-f"])
        .arg(script)
        .arg(infra::database_url(database))
        .output()
        .context("cannot run pgbench")?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!("pgbench failed: {}{}", text, String::from_utf8_lossy(&output.stderr));
    }
    text.lines()
        .find(|line| line.starts_with("tps = "))
        .and_then(|line| line.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .context("pgbench printed no tps")
}

/// pgbench running the statements of one checkout's transaction in order-service, with 8
/// clients: claim the idempotency key, insert the order and its items, enqueue the event,
/// store the answer.
fn pgbench_checkout(database: &str) -> anyhow::Result<f64> {
    let script = crate::root().join("target").join("bench-checkout.sql");
    std::fs::write(
        &script,
        "\\set user random(1, 1000000)\n\
         BEGIN;\n\
         INSERT INTO idempotency_keys (user_id, key, request_hash) VALUES (gen_random_uuid(), gen_random_uuid()::text, '\\x00') ON CONFLICT DO NOTHING;\n\
         WITH o AS (INSERT INTO orders (id, user_id, status, total_amount, currency, shipping_address, created_at, updated_at) \
         VALUES (gen_random_uuid(), gen_random_uuid(), 'pending_payment', 1999, 'USD', '{\"name\":\"A\",\"line1\":\"1\",\"city\":\"X\",\"postal_code\":\"1\",\"country\":\"GB\"}', now(), now()) RETURNING id) \
         INSERT INTO order_items (order_id, product_id, name, quantity, unit_price_amount, currency) SELECT o.id, gen_random_uuid(), 'Lamp', 1, 1999, 'USD' FROM o;\n\
         INSERT INTO outbox (id, topic, key, ce_type, ce_source, payload) VALUES (gen_random_uuid(), 'bench', 'k', 'bench', 'bench', '\\x00');\n\
         END;\n",
    )?;
    pgbench(database, &script, 8)
}

fn redis_benchmark(command: &[&str]) -> anyhow::Result<f64> {
    let output = Command::new("redis-benchmark")
        .args(["-c", &CONNECTIONS.to_string(), "-n", "200000", "-q"])
        .args(command)
        .output()
        .context("cannot run redis-benchmark")?;
    let text = String::from_utf8_lossy(&output.stdout).replace('\r', "\n");
    text.lines()
        .rev()
        .find_map(|line| {
            line.split(": ").nth(1).and_then(|rest| rest.split_whitespace().next()).and_then(|n| n.parse().ok())
        })
        .context("redis-benchmark printed no rate")
}

/// `bench-grpc`: this binary as a tonic client, in its own process.
fn grpc_load(url: &str, id: &str) -> anyhow::Result<f64> {
    let binary = crate::root().join("target/release/xtask");
    let output = Command::new(binary)
        .args(["bench-grpc", url, id, &CONNECTIONS.to_string(), &SECONDS.to_string()])
        .output()
        .context("cannot run bench-grpc")?;
    if !output.status.success() {
        bail!("bench-grpc failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().context("bench-grpc printed no rate")
}

struct CheckoutResult {
    orders_per_second: f64,
    place_p99_ms: f64,
    confirm_p50_ms: f64,
    confirm_p99_ms: f64,
}

fn k6_checkout(instance: &Instance) -> anyhow::Result<CheckoutResult> {
    let k6 = crate::load::k6()?;
    let dir = crate::root().join("load-tests");
    std::fs::create_dir_all(dir.join("results"))?;
    let mut command = Command::new(k6);
    command
        .current_dir(&dir)
        .args(["run", "--no-usage-report", "--quiet", "scenarios/checkout.js"])
        .env("RESULTS_DIR", "results")
        .env("VUS", "8")
        .env("USERS", "8")
        .env("DURATION", "20s")
        .env("ADMIN_EMAIL", up::admin_email())
        .env("ADMIN_PASSWORD", up::admin_password())
        .stdout(Stdio::null());
    for service in services::ALL {
        command.env(format!("{}_URL", service.name.to_uppercase()), instance.url(service));
    }
    // Thresholds may fail here: the figures are what counts.
    let _ = command.status().context("cannot run k6")?;
    let text = std::fs::read_to_string(dir.join("results/checkout.json")).context("k6 wrote no summary")?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let metric = |name: &str, stat: &str| json["metrics"][name]["values"][stat].as_f64().unwrap_or(f64::NAN);
    let duration = json["state"]["testRunDurationMs"].as_f64().unwrap_or(20_000.0) / 1000.0;
    Ok(CheckoutResult {
        orders_per_second: metric("checkout_placed", "count") / duration,
        place_p99_ms: metric("http_req_duration{api:checkout}", "p(99)"),
        confirm_p50_ms: metric("order_to_confirmed", "med"),
        confirm_p99_ms: metric("order_to_confirmed", "p(99)"),
    })
}

fn register(user_url: &str) -> anyhow::Result<(String, String)> {
    let email = format!("bench-{}@bench.shop.local", std::process::id());
    let body = format!(r#"{{"email":"{email}","password":"bench-password-1","name":"Bench"}}"#);
    let created = curl_json("POST", &format!("{user_url}/v1/users"), &body, None)?;
    let id = created["id"].as_str().context("no user id")?.to_owned();
    let login = curl_json(
        "POST",
        &format!("{user_url}/v1/auth/login"),
        &format!(r#"{{"email":"{email}","password":"bench-password-1"}}"#),
        None,
    )?;
    Ok((id, login["access_token"].as_str().context("no token")?.to_owned()))
}

fn curl_json(method: &str, url: &str, body: &str, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    let mut command = Command::new("curl");
    command.args(["-sf", "-X", method, url, "-H", "content-type: application/json", "-d", body]);
    if let Some(token) = token {
        command.args(["-H", &format!("authorization: Bearer {token}")]);
    }
    let output = command.output().context("cannot run curl")?;
    if !output.status.success() {
        bail!("{method} {url} failed");
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

// ---- processes and memory

fn spawn_baseline(kind: &str, port: u16) -> anyhow::Result<Child> {
    Command::new(crate::root().join("target/release/xtask"))
        .args(["bench-server", kind, &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start the {kind} baseline"))
}

fn wait_port(port: u16) -> anyhow::Result<()> {
    infra::wait_until_reachable("a baseline server", &format!("127.0.0.1:{port}"), Duration::from_secs(10))
}

/// Resident memory of a process, KiB (0 if it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples every service's RSS every 100 ms and keeps the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peaks: Arc<Mutex<Vec<(&'static str, u64)>>>,
    handle: thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pids: &[(&'static str, u32)]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peaks = Arc::new(Mutex::new(pids.iter().map(|(name, _)| (*name, 0)).collect::<Vec<_>>()));
        let (stop_flag, shared, pids) = (Arc::clone(&stop), Arc::clone(&peaks), pids.to_vec());
        let handle = thread::spawn(move || {
            while !stop_flag.load(Ordering::Relaxed) {
                if let Ok(mut peaks) = shared.lock() {
                    for ((_, pid), (_, peak)) in pids.iter().zip(peaks.iter_mut()) {
                        *peak = (*peak).max(rss_kib(*pid));
                    }
                }
                thread::sleep(Duration::from_millis(100));
            }
        });
        Self { stop, peaks, handle }
    }

    fn stop(self) -> Vec<(&'static str, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
        self.peaks.lock().map(|peaks| peaks.clone()).unwrap_or_default()
    }
}

// ---- the report

#[expect(clippy::too_many_arguments, reason = "one report from every part of the run")]
fn write_report(
    figures: &[Figure],
    present: &[&'static Service],
    ready: &[Duration],
    idle: &[(&str, u64)],
    peaks: &[(&str, u64)],
    sizes: &[(&str, u64)],
    started: Instant,
    build_done: Instant,
) -> anyhow::Result<()> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = thread::available_parallelism().map(usize::from).unwrap_or(0);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| info.lines().next().and_then(|line| line.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or("?".into(), |kib| format!("{:.0} GiB", kib as f64 / 1024.0 / 1024.0));
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .unwrap_or_default();
    let mut doc = String::new();
    writeln!(doc, "# Performance\n")?;
    writeln!(doc, "Written by `cargo xtask bench` on {date}: {cores} cores ({cpu}), {memory} RAM, the release build,")?;
    writeln!(doc, "the load generators on the same machine (so every figure shares the 2 cores with its")?;
    writeln!(doc, "generator, and every ratio compares two runs that share them the same way). Postgres 15")?;
    writeln!(doc, "and Redis 7 local, tansu as the broker. Each load runs {SECONDS} s with {CONNECTIONS} connections")?;
    writeln!(
        doc,
        "unless the row says otherwise. Run time: {:.0} s after a {:.0} s build.\n",
        started.elapsed().saturating_sub(build_done.duration_since(started)).as_secs_f64(),
        build_done.duration_since(started).as_secs_f64()
    )?;
    writeln!(doc, "| figure | measured | limit on this machine | ratio | target | met |")?;
    writeln!(doc, "|---|---|---|---|---|---|")?;
    for figure in figures {
        writeln!(
            doc,
            "| {} | {} | {} | {} | {} | {} |",
            figure.name,
            figure.measured,
            figure.baseline,
            figure.ratio.map_or("-".into(), |ratio| format!("{ratio:.2}×")),
            figure.target,
            match figure.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        )?;
    }
    writeln!(doc, "\n## Per service\n")?;
    writeln!(
        doc,
        "| service | start → ready | RSS idle | RSS peak under the loads | stripped binary | targets (≤ 250 ms, ≤ 15 MiB, ≤ 64 MiB, ≤ 15 MB) |"
    )?;
    writeln!(doc, "|---|---|---|---|---|---|")?;
    for (index, service) in present.iter().enumerate() {
        let ready_ms = ready.get(index).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
        let idle_kib = idle.iter().find(|(name, _)| *name == service.name).map_or(0, |(_, kib)| *kib);
        let peak_kib = peaks.iter().find(|(name, _)| *name == service.name).map_or(0, |(_, kib)| *kib).max(idle_kib);
        let size = sizes.iter().find(|(name, _)| *name == service.name).map_or(0, |(_, bytes)| *bytes);
        let met = ready_ms <= 250.0 && idle_kib <= 15 * 1024 && peak_kib <= 64 * 1024 && size <= 15_000_000;
        writeln!(
            doc,
            "| {} | {:.0} ms | {:.1} MiB | {:.1} MiB | {:.1} MB | {} |",
            service.name,
            ready_ms,
            idle_kib as f64 / 1024.0,
            peak_kib as f64 / 1024.0,
            size as f64 / 1e6,
            if met { "yes" } else { "**no**" }
        )?;
    }
    writeln!(doc, "\nStart → ready is from spawning the process to its first `200` from `/readyz` (migrations")?;
    writeln!(doc, "already applied, connections to Postgres, Redis and the broker made).\n")?;
    writeln!(doc, "{}", include_str!("bench-notes.md"))?;
    let path = crate::root().join("docs/performance.md");
    std::fs::write(&path, doc).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

// ---- the bare servers and the gRPC client (hidden subcommands, run as their own processes)

/// `bench-server axum|tonic <port>`: the ceiling — a handler that only answers.
pub(crate) fn server(args: &[String]) -> anyhow::Result<()> {
    let [kind, port] = args else { bail!("usage: bench-server axum|tonic <port>") };
    let address = SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>()?));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match kind.as_str() {
            "axum" => {
                let body = serde_json::json!({
                    "id": "01900000-0000-7000-8000-000000000000", "sku": "LAMP-001", "name": "Desk lamp",
                    "description": "A warm desk lamp with a linen shade and a brass stem, for long evenings.",
                    "price": {"amount": 4900, "currency": "USD"}, "categories": ["home", "lighting"],
                    "stock_available": 120, "image_url": "https://img.shop.local/lamp.jpg",
                    "created_at": "2026-11-22T10:00:00Z", "updated_at": "2026-11-22T10:00:00Z"
                });
                let app = axum::Router::new().route(
                    "/json",
                    axum::routing::get(move || {
                        let body = body.clone();
                        async move { axum::Json(body) }
                    }),
                );
                let listener = tokio::net::TcpListener::bind(address).await?;
                axum::serve(listener, app).await?;
            }
            "tonic" => {
                tonic::transport::Server::builder()
                    .add_service(shop_proto::shop::product::v1::product_service_server::ProductServiceServer::new(Echo))
                    .serve(address)
                    .await?;
            }
            other => bail!("unknown baseline {other:?}"),
        }
        Ok(())
    })
}

/// A ProductService whose GetProduct returns a fixed product: a bare tonic unary call.
struct Echo;

#[tonic::async_trait]
impl shop_proto::shop::product::v1::product_service_server::ProductService for Echo {
    async fn get_product(
        &self,
        request: tonic::Request<shop_proto::shop::product::v1::GetProductRequest>,
    ) -> Result<tonic::Response<shop_proto::shop::product::v1::GetProductResponse>, tonic::Status> {
        use shop_proto::shop::{common::v1::Money, product::v1::Product};
        let product = Product {
            id: request.into_inner().product_id,
            sku: "LAMP-001".into(),
            name: "Desk lamp".into(),
            description: "A warm desk lamp with a linen shade and a brass stem, for long evenings.".into(),
            price: Some(Money { amount: 4900, currency: "USD".into() }),
            categories: vec!["home".into(), "lighting".into()],
            stock_available: 120,
            image_url: "https://img.shop.local/lamp.jpg".into(),
            active: true,
            created_at: None,
            updated_at: None,
        };
        Ok(tonic::Response::new(shop_proto::shop::product::v1::GetProductResponse { product: Some(product) }))
    }

    async fn batch_get_products(
        &self,
        _: tonic::Request<shop_proto::shop::product::v1::BatchGetProductsRequest>,
    ) -> Result<tonic::Response<shop_proto::shop::product::v1::BatchGetProductsResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }

    async fn reserve_stock(
        &self,
        _: tonic::Request<shop_proto::shop::product::v1::ReserveStockRequest>,
    ) -> Result<tonic::Response<shop_proto::shop::product::v1::ReserveStockResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }

    async fn release_stock(
        &self,
        _: tonic::Request<shop_proto::shop::product::v1::ReleaseStockRequest>,
    ) -> Result<tonic::Response<shop_proto::shop::product::v1::ReleaseStockResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("baseline"))
    }
}

/// `bench-grpc <url> <product id> <concurrency> <seconds>`: prints successful calls per second.
pub(crate) fn grpc_client(args: &[String]) -> anyhow::Result<()> {
    let [url, id, concurrency, seconds] = args else { bail!("usage: bench-grpc <url> <id> <concurrency> <seconds>") };
    let concurrency: usize = concurrency.parse()?;
    let seconds: u64 = seconds.parse()?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let rate = runtime.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url.clone())?.connect().await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..concurrency {
            let mut client =
                shop_proto::shop::product::v1::product_service_client::ProductServiceClient::new(channel.clone());
            let id = id.clone();
            tasks.push(tokio::spawn(async move {
                let mut done = 0_u64;
                while tokio::time::Instant::now() < deadline {
                    let request = shop_proto::shop::product::v1::GetProductRequest { product_id: id.clone() };
                    if client.get_product(request).await.is_ok() {
                        done += 1;
                    }
                }
                done
            }));
        }
        let mut total = 0_u64;
        for task in tasks {
            total += task.await.unwrap_or(0);
        }
        anyhow::Ok(total as f64 / seconds as f64)
    })?;
    #[expect(clippy::print_stdout, reason = "the parent process reads the rate")]
    {
        println!("{rate:.1}");
    }
    Ok(())
}
