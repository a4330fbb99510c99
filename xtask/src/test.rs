//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure:
//! `cargo fmt --check`, `cargo clippy -D warnings`, the offline deploy checks
//! (`cargo xtask deploy-check`), the k6 smoke scenario against a private copy of the
//! platform (and the dashboard's queries against Prometheus scraping it), the dev render of
//! the charts run as processes (`xtask/deploy/runrendered.py`), the chaos run (`cargo xtask chaos`: restarts and kills during checkouts, on
//! servers of its own), then every test (nextest) against the
//! real Postgres, Redis and broker, which it makes sure are up. The test runner's summary
//! is the last thing printed, so a run that tested nothing is visible.
//! Arguments after `--` go to nextest (`cargo xtask test -- -E 'test(login)'`).

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::infra;

/// `cargo xtask test [-- <nextest arguments>]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Passed to nextest (or cargo test) as they are, e.g. `-E 'test(login)'`.
    #[arg(last = true, value_name = "NEXTEST_ARGS")]
    pub(crate) nextest: Vec<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let passthrough: Vec<&str> = args.nextest.iter().map(String::as_str).collect();
    step("cargo fmt --check", cargo(&["fmt", "--all", "--check"]))?;
    step("cargo clippy", cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    eprintln!("xtask: == cargo deny (advisories, licenses, bans, sources)");
    crate::deny::check()?;
    eprintln!("xtask: == deploy-check");
    crate::deploy::check()?;

    let dir = crate::state_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut started = Vec::new();
    let result = (|| {
        started.extend(infra::ensure_postgres()?);
        started.extend(infra::ensure_redis()?);
        let brokers = infra::test_brokers();
        started.extend(infra::ensure_broker_at(&brokers, "sqlite://tansu-test.db", &dir.join("tansu-test.log"))?);
        drop_leftover_test_databases()?;
        eprintln!("xtask: == k6 smoke (a private copy of the platform)");
        crate::load::smoke_on_private_instance(&dir, &brokers).context("the k6 smoke test failed")?;
        eprintln!("xtask: == the dev render run as processes (probes, then the k6 smoke through its Services)");
        crate::deploy::run_rendered(&crate::build_dir("debug"), &dir.join("rendered-logs"))
            .context("the rendered manifests do not run")?;
        eprintln!("xtask: == chaos (its own Postgres, Redis and broker)");
        crate::chaos::run().context("the chaos run failed")?;
        step("tests", nextest(&passthrough, &brokers))
    })();
    for thing in started.into_iter().rev() {
        thing.stop();
    }
    result
}

fn cargo(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO"));
    command.current_dir(crate::root()).args(args);
    command
}

fn nextest(passthrough: &[&str], brokers: &str) -> Command {
    let has_nextest =
        Command::new(env!("CARGO")).args(["nextest", "--version"]).output().is_ok_and(|output| output.status.success());
    let mut command = if has_nextest {
        cargo(&["nextest", "run", "--workspace", "--no-fail-fast"])
    } else {
        eprintln!("xtask: cargo-nextest not found; using cargo test");
        cargo(&["test", "--workspace", "--no-fail-fast"])
    };
    command
        .args(passthrough)
        .env("TEST_DATABASE_URL", infra::postgres_url())
        .env("TEST_REDIS_URL", infra::redis_url())
        .env("KAFKA_BROKERS", brokers);
    command
}

fn step(name: &str, mut command: Command) -> anyhow::Result<()> {
    eprintln!("xtask: == {name}");
    let status = command.status().with_context(|| format!("cannot run {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

/// Test databases left behind by a killed run (a passing test drops its own).
fn drop_leftover_test_databases() -> anyhow::Result<()> {
    let names = infra::psql("SELECT datname FROM pg_database WHERE datname LIKE 'shop\\_test\\_%'")?;
    for name in names.lines().filter(|name| !name.is_empty()) {
        infra::psql(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))?;
    }
    Ok(())
}
