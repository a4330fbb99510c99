//! The load generators outside this binary: oha (HTTP, installed once with cargo), pgbench
//! and redis-benchmark (the databases' own ceilings).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::{CONNECTIONS, SECONDS};
use crate::infra;

/// What oha measured: successful answers per second and the 99th percentile latency.
pub(super) struct HttpResult {
    pub(super) rps: f64,
    pub(super) p99_ms: f64,
}

/// oha, installed once into ~/.cargo/bin.
pub(super) fn oha() -> anyhow::Result<PathBuf> {
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
pub(super) fn oha_max(oha: &Path, url: &str, extra: &[&str]) -> anyhow::Result<HttpResult> {
    let connections = CONNECTIONS.to_string();
    let duration = format!("{SECONDS}s");
    let mut args = vec!["-c", &connections, "-z", &duration];
    args.extend_from_slice(extra);
    oha_run(oha, url, &args)
}

/// Open loop at `rate` requests per second, latency measured from when each was due.
pub(super) fn oha_rate(oha: &Path, url: &str, rate: u32) -> anyhow::Result<HttpResult> {
    let rate = rate.to_string();
    let connections = CONNECTIONS.to_string();
    let duration = format!("{SECONDS}s");
    oha_run(oha, url, &["-c", &connections, "-z", &duration, "-q", &rate, "--latency-correction"])
}

/// oha with `args` against `url`; fails unless at least 99% of the answers were 2xx.
pub(super) fn oha_run(oha: &Path, url: &str, args: &[&str]) -> anyhow::Result<HttpResult> {
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

/// pgbench running `script` with `clients` connections in the extended protocol with
/// prepared statements, as sqlx runs the services' statements (parsed and planned once per
/// connection, then bound and executed); `variables` are `-D name=value`, which the script
/// uses as `:name` and pgbench sends as bind parameters. Returns transactions per second.
pub(super) fn pgbench_prepared(
    database: &str,
    script: &Path,
    clients: u32,
    variables: &[(&str, &str)],
) -> anyhow::Result<f64> {
    let mut command = Command::new("pgbench");
    command.args(["-n", "-M", "prepared", "-c", &clients.to_string(), "-j", "2", "-T", &SECONDS.to_string()]);
    for (name, value) in variables {
        command.arg("-D").arg(format!("{name}={value}"));
    }
    let output =
        command.arg("-f").arg(script).arg(infra::database_url(database)).output().context("cannot run pgbench")?;
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

/// redis-benchmark running `command` with [`CONNECTIONS`] clients; returns requests per second.
pub(super) fn redis_benchmark(command: &[&str]) -> anyhow::Result<f64> {
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
