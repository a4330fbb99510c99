//! `cargo xtask render --env <dev|staging|prod> --out <dir>` and `cargo xtask deploy-check`.
//!
//! Both run `xtask/deploy/shopdeploy.py` in a virtualenv under `target/deploy-venv` holding
//! the pinned tools of `xtask/deploy/requirements.txt` (Helm's Go engine from
//! helm-python-sdk, kubernetes-validate, checkov). The venv is made once and remade only when
//! the requirements change.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cli::Environment;

/// `cargo xtask render --env <dev|staging|prod> --out <dir>`.
#[derive(Debug, clap::Args)]
pub(crate) struct RenderArgs {
    /// The environment whose manifests to render.
    #[arg(long, value_enum)]
    pub(crate) env: Environment,
    /// The directory to write them to (relative to the current directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) out: PathBuf,
}

pub(crate) fn render(args: RenderArgs) -> anyhow::Result<()> {
    let out = if args.out.is_absolute() { args.out } else { std::env::current_dir()?.join(args.out) };
    let python = venv()?;
    run(Command::new(python).arg(script()).args(["render", "--env", args.env.as_str(), "--out"]).arg(&out), "render")
}

pub(crate) fn check() -> anyhow::Result<()> {
    let python = venv()?;
    run(Command::new(&python).arg(script()).arg("check"), "deploy-check")?;
    run(Command::new(&python).arg(script()).arg("selftest"), "deploy-check selftest (deliberate breaks must fail)")
}

/// The dev render run as local processes (`xtask/deploy/runrendered.py`): each
/// Deployment's container from the service binaries under `bin_dir`, its probes polled, the
/// k6 smoke through its Services; then its self-test (renamed env vars, secret files, ports
/// and probe paths must fail). Needs the binaries built and k6 installed (the smoke's step
/// does both).
pub(crate) fn run_rendered(bin_dir: &Path, log_dir: &Path) -> anyhow::Result<()> {
    let python = venv()?;
    let runner = crate::root().join("xtask").join("deploy").join("runrendered.py");
    let k6 = crate::load::k6()?;
    for command in ["run", "selftest"] {
        let mut invocation = Command::new(&python);
        invocation
            .arg(&runner)
            .arg(command)
            .arg("--bin-dir")
            .arg(bin_dir)
            .arg("--log-dir")
            .arg(log_dir)
            .arg("--k6")
            .arg(&k6);
        run(&mut invocation, &format!("the rendered manifests as processes ({command})"))?;
    }
    Ok(())
}

fn script() -> PathBuf {
    crate::root().join("xtask").join("deploy").join("shopdeploy.py")
}

fn run(command: &mut Command, name: &str) -> anyhow::Result<()> {
    let status = command.current_dir(crate::root()).status().with_context(|| format!("cannot run {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

/// The venv's python, creating or refreshing the venv when the requirements changed.
pub(crate) fn venv() -> anyhow::Result<PathBuf> {
    ensure_venv(&crate::root().join("target").join("deploy-venv"), &[&requirements()])
}

fn requirements() -> PathBuf {
    crate::root().join("xtask").join("deploy").join("requirements.txt")
}

/// Creates `dir` as a virtualenv with every requirements file installed (pip `--require-hashes`
/// applies to a file that carries hashes). A stamp of the files' contents skips the install
/// when nothing changed.
pub(crate) fn ensure_venv(dir: &Path, requirement_files: &[&Path]) -> anyhow::Result<PathBuf> {
    let python = dir.join("bin").join("python");
    let mut wanted = String::new();
    for file in requirement_files {
        wanted.push_str(&std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?);
    }
    let stamp = dir.join("shop-requirements.stamp");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted) {
        return Ok(python);
    }
    eprintln!("xtask: creating the Python tools' virtualenv in {} (once)", dir.display());
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(dir), "python3 -m venv")?;
    }
    for file in requirement_files {
        run(
            Command::new(&python)
                .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
                .arg(file),
            &format!("pip install -r {}", file.display()),
        )?;
    }
    std::fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(python)
}
