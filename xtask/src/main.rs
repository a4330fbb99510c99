//! `cargo xtask`: the developer's one entry point. `cargo xtask --help` lists the commands,
//! `cargo xtask <command> --help` their arguments.
//!
//! - `cargo xtask up`: runs the whole platform on this machine (see [`up`]).
//! - `cargo xtask test`: every check CI runs (see [`test`]).
//! - `cargo xtask seed`: the demo catalog (see [`seed`]).
//! - `cargo xtask dlq list|redrive <topic>`: a topic's dead letters (see [`dlq`]).
//! - `cargo xtask render`, `deploy-check`: the deploy files, offline (see [`deploy`]).
//! - `cargo xtask promote`, `rollback`, `set-image`, `set-revision`: a release (git revision and
//!   images, [`release`]) moves dev → staging → prod (see [`promote`]).
//! - `cargo xtask load`: k6 scenarios against the running platform (see [`load`]).
//! - `cargo xtask contract`: schemathesis against every OpenAPI document (see [`contract`]).
//! - `cargo xtask bench`: every figure next to this machine's limits (see [`bench`]).
//! - `cargo xtask chaos`: the invariants hold through restarts, a paused broker and killed
//!   services (see [`chaos`]).
//!
//! Few dependencies on purpose: this builds before anything else and must stay quick. It
//! depends on no service crate: what it shares with one (the SQL the benchmark compares
//! against pgbench) it reads from the service's files.
//!
//! # Layout
//!
//! - `main.rs`: dispatch, and the paths every command shares (workspace root, build and
//!   state directories).
//! - [`cli`]: the command line (clap): every subcommand, its arguments and help.
//! - [`platform`]: the platform as processes: an [`platform::Instance`] of the six services,
//!   built, started, waited for until ready, stopped. Used by `up`, the smoke test and `bench`.
//! - [`services`]: the six services, their ports and databases.
//! - [`infra`]: Postgres, Redis and the broker: found, started when stopped, used.
//! - [`color`]: ANSI colors, only on a terminal and never with `NO_COLOR`.
//! - `tidy`: tests that keep the repository's shape (modules, lints, file sizes, crate
//!   dependencies, topic names from the contracts).
//! - One module per command: [`up`], [`test`], [`seed`], [`dlq`], [`deploy`] (`render`,
//!   `deploy-check`), [`promote`] (`promote`, `rollback`, `set-image`, `set-revision`), [`load`] (also the smoke test
//!   of `test`), [`contract`] (also run by `test`, after the smoke).
//! - [`bench`]: the benchmark, one file per concern: `mod.rs` (the command, the run's order
//!   and the private instance), one per measured area (`reads`, `cart`, `saga`, `backlog`,
//!   `checkout`), `orders` (the k6 orders driver and the saga's rows), `generators` (oha,
//!   pgbench, redis-benchmark), `baseline` (the bare axum/tonic servers and the gRPC client,
//!   the hidden `bench-server` and `bench-grpc` commands), `broker` (its own broker behind a
//!   proxy that can cut it), `memory` (RSS), `report` (docs/performance.md, with `notes.md`).
//! - [`chaos`]: the chaos run, one file per concern: `mod.rs` (the run and its report),
//!   `servers` (its own Postgres, Redis and broker), `driver` (the buyers), `invariants`.

mod bench;
mod chaos;
mod cli;
mod color;
mod contract;
mod deny;
mod deploy;
mod dlq;
mod infra;
mod load;
mod observe;
mod platform;
mod promote;
mod release;
mod seed;
mod services;
mod test;
#[cfg(test)]
mod tidy;
mod up;

use std::{path::PathBuf, process::ExitCode};

use clap::{CommandFactory as _, Parser as _};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let Some(command) = Cli::parse().command else {
        // No command: the help, as `--help` prints it.
        return match Cli::command().print_help() {
            Ok(()) => ExitCode::SUCCESS,
            Err(_) => ExitCode::FAILURE,
        };
    };
    match run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Up(args) => up::run(args),
        Command::Test(args) => test::run(args),
        Command::Seed => seed::run(),
        Command::Dlq { action } => dlq::run(action),
        Command::Render(args) => deploy::render(args),
        Command::DeployCheck => deploy::check(),
        Command::Deny => deny::check(),
        Command::Contract => contract::command(),
        Command::Promote(args) => promote::run(args),
        Command::Rollback(args) => promote::run_rollback(args),
        Command::SetImage(args) => promote::set_image_command(args),
        Command::SetRevision(args) => promote::set_revision_command(args),
        Command::Load(args) => load::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Chaos => chaos::run(),
        // Internal: the benchmark's bare servers and gRPC client, run as their own processes.
        Command::BenchServer(args) => bench::server(args),
        Command::BenchGrpc(args) => bench::grpc_client(args),
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
