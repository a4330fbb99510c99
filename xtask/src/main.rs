//! `cargo xtask`: the developer's one entry point.
//!
//! - `cargo xtask up`: runs the whole platform on this machine (see [`up`]).
//! - `cargo xtask test`: every check CI runs (see [`test`]).
//! - `cargo xtask seed`: the demo catalog (see [`seed`]).
//! - `cargo xtask render`, `deploy-check`: the deploy files, offline (see [`deploy`]).
//! - `cargo xtask promote`: a release moves dev → staging → prod (see [`promote`]).
//! - `cargo xtask load`: k6 scenarios against the running platform (see [`load`]).
//!
//! Few dependencies on purpose: this builds before anything else and must stay quick.

mod bench;
mod color;
mod deploy;
mod dlq;
mod infra;
mod load;
mod platform;
mod promote;
mod seed;
mod services;
mod test;
mod up;

use std::{path::PathBuf, process::ExitCode};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  up      start Postgres/Redis/broker if needed and run every service; Ctrl-C stops it
  test    fmt, clippy, then every test against real Postgres, Redis and the broker
  seed    load the demo catalog into the product database (idempotent)
  dlq     list <topic> | redrive <topic>: inspect or replay a topic's dead letters
  render  --env <dev|staging|prod> --out <dir>: the manifests Argo CD applies to an environment
  deploy-check    helm lint + render, Kubernetes/CRD schemas, policies, checkov (offline)
  promote <from> <to> [--service S] [--tag T] [--dry-run]: copy image tags dev → staging → prod
  bench   [--only reads,cart,saga,backlog,checkout]: measure every figure next to this machine's limits; writes docs/performance.md
  set-image <env> <service> <tag> [<digest>]: record the image an environment runs (CI)
  load    <smoke|browse|checkout|mixed|stress|spike|soak|grpc> [--vus N --duration D --rate R]: k6 against `up`
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("up") => up::run(&args[1..]),
        Some("test") => test::run(&args[1..]),
        Some("seed") => seed::run(&args[1..]),
        Some("dlq") => dlq::run(&args[1..]),
        Some("render") => deploy::render(&args[1..]),
        Some("deploy-check") => deploy::check(&args[1..]),
        Some("promote") => promote::run(&args[1..]),
        Some("set-image") => promote::set_image_command(&args[1..]),
        Some("load") => load::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        // Internal: the benchmark's bare servers and gRPC client, run as their own processes.
        Some("bench-server") => bench::server(&args[1..]),
        Some("bench-grpc") => bench::grpc_client(&args[1..]),
        Some("help" | "--help" | "-h") | None => {
            eprint!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(anyhow::anyhow!("unknown command {other:?}\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of xtask/).
fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// Where cargo puts the `profile` build's binaries: `CARGO_TARGET_DIR` if set (relative to
/// the workspace), else target/.
fn build_dir(profile: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), |dir| root().join(dir));
    target.join(profile)
}

/// Where `up` keeps its state: the broker's data, the dev signing key, the lock file.
fn state_dir() -> PathBuf {
    root().join("target").join("shop-dev")
}
