//! Releases move dev → staging → prod as one reviewable change (issue #17, item 2).
//!
//! - `cargo xtask promote <from> <to>` gives `<to>` what `<from>` runs: its git revision (so
//!   the chart and every values file of that commit) and its images, tags and digests, in
//!   `argocd/envs/<to>/release.yaml`. It refuses unless `<from>`'s revision is a commit of the
//!   checked-out branch and `<to>`'s current revision is one of its ancestors: a promotion
//!   only ever moves an environment forward along main. The change is committed on a new
//!   branch `promote/<to>-<short revision>` whose message lists the commits it ships, ready
//!   for a pull request; Argo CD applies it once merged.
//! - `cargo xtask rollback <env>` restores the release before the current one (the previous
//!   version of the file in git), on a branch `rollback/<env>-<short revision>`.
//! - `set-image` and `set-revision` record what CI built for dev.
//!
//! `--dry-run` prints the change and writes nothing; `--no-commit` writes the file only.

use std::{fmt::Write as _, path::Path};

use anyhow::{Context as _, bail};

use crate::{
    cli::Environment,
    release::{self, Image, Release, git, is_ancestor},
};

const STEPS: [(&str, &str); 2] = [("dev", "staging"), ("staging", "prod")];

/// `cargo xtask promote <FROM> <TO> [--dry-run] [--no-commit]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The environment whose release to copy (dev or staging).
    #[arg(value_enum)]
    pub(crate) from: Environment,
    /// The next environment (staging or prod).
    #[arg(value_enum)]
    pub(crate) to: Environment,
    #[command(flatten)]
    pub(crate) output: Output,
}

/// `cargo xtask rollback <ENV> [--dry-run] [--no-commit]`.
#[derive(Debug, clap::Args)]
pub(crate) struct RollbackArgs {
    /// The environment to put back on its previous release.
    #[arg(value_enum)]
    pub(crate) env: Environment,
    #[command(flatten)]
    pub(crate) output: Output,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Output {
    /// Print the change and write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Write release.yaml but make no branch and no commit.
    #[arg(long, conflicts_with = "dry_run")]
    pub(crate) no_commit: bool,
}

/// What to do with a computed change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    DryRun,
    Write,
    Commit,
}

impl Output {
    fn mode(&self) -> Mode {
        if self.dry_run {
            Mode::DryRun
        } else if self.no_commit {
            Mode::Write
        } else {
            Mode::Commit
        }
    }
}

/// A release change: the file before and after, and the branch it was committed on.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) before: Release,
    pub(crate) after: Release,
    pub(crate) branch: Option<String>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let change = promote(&crate::root(), args.from.as_str(), args.to.as_str(), args.output.mode())?;
    report(&change, args.output.mode());
    Ok(())
}

pub(crate) fn run_rollback(args: RollbackArgs) -> anyhow::Result<()> {
    let change = rollback(&crate::root(), args.env.as_str(), args.output.mode())?;
    report(&change, args.output.mode());
    Ok(())
}

fn report(change: &Change, mode: Mode) {
    eprint!("{}", diff(&change.before, &change.after));
    let env = &change.after.environment;
    match (&change.branch, mode) {
        (_, Mode::DryRun) => eprintln!("{env}: dry run, nothing written"),
        (Some(branch), _) => eprintln!(
            "{env}: committed on branch {branch}; push it and open a pull request (Argo CD applies it once merged)"
        ),
        (None, _) => eprintln!("{env}: {} written; commit it to release", release::path(env).display()),
    }
}

/// Gives `to` the revision and images of `from`.
pub(crate) fn promote(root: &Path, from: &str, to: &str, mode: Mode) -> anyhow::Result<Change> {
    if !STEPS.contains(&(from, to)) {
        bail!("cannot promote {from} → {to}: a release goes dev → staging → prod, one step at a time");
    }
    let source = Release::read(root, from)?;
    let before = Release::read(root, to)?;
    let revision = &source.revision;
    let commit = git(root, &["rev-parse", "--verify", "--quiet", &format!("{revision}^{{commit}}")])
        .ok()
        .with_context(|| format!("{from}'s revision {revision} is not a commit of this repository (fetch it first)"))?;
    if !is_ancestor(root, &commit, "HEAD")? {
        bail!(
            "refusing: {from}'s revision {revision} is not an ancestor of this branch (HEAD); only commits of main are promoted"
        );
    }
    if !is_ancestor(root, &before.revision, &commit)? {
        bail!(
            "refusing: {to} runs {}, which is not an ancestor of {from}'s {revision}: promoting would take {to} back or sideways (use `cargo xtask rollback {to}` to go back)",
            before.revision
        );
    }
    for (name, image) in &source.images {
        built_from_revision(root, name, &image.tag, &commit).with_context(|| {
            format!("refusing: {from}'s image {name} ({}) does not run the code of its revision {revision}", image.tag)
        })?;
        if image.digest.is_empty() {
            bail!(
                "refusing: {from}'s image {name} ({}) has no digest recorded: {to} pins images by digest (CI records it when it pushes)",
                image.tag
            );
        }
    }
    let after = Release {
        environment: to.to_owned(),
        revision: commit,
        auto_sync: before.auto_sync,
        images: source.images.clone(),
    };
    let log = git(root, &["log", "--oneline", "--no-decorate", &format!("{}..{}", before.revision, after.revision)])?;
    let message = format!(
        "promote({to}): {} from {from}\n\n{to} renders the chart and values of {} and runs {from}'s images.\n\nCommits shipped:\n{}\n",
        short(&after.revision),
        after.revision,
        if log.is_empty() { "(none: the same revision; images only)".to_owned() } else { log }
    );
    finish(root, before, after, mode, &format!("promote/{to}-{}", short(&source.revision)), &message)
}

/// What an image is built from: the services' code for theirs, the load tests for k6's.
fn image_sources(name: &str) -> &'static [&'static str] {
    if name == "loadtest" {
        &["load-tests"]
    } else {
        &["services", "crates", "proto", "Cargo.toml", "Cargo.lock", "Dockerfile"]
    }
}

/// An image tagged `sha-<commit>` (CI's tag) runs the code of `revision` when the commit is
/// the revision or an ancestor with the same sources: otherwise the chart of the revision
/// would configure a binary that predates it (a setting it ignores, a port it lacks).
fn built_from_revision(root: &Path, name: &str, tag: &str, revision: &str) -> anyhow::Result<()> {
    let commit = tag
        .strip_prefix("sha-")
        .filter(|commit| release::is_commit_id(commit))
        .with_context(|| format!("{tag} is not a tag CI pushes (sha-<the full commit id>)"))?;
    if !is_ancestor(root, commit, revision)? {
        bail!("{commit} is not the revision or one of its ancestors");
    }
    let mut args = vec!["diff", "--name-only", commit, revision, "--"];
    args.extend(image_sources(name));
    let changed = git(root, &args)?;
    if !changed.is_empty() {
        bail!(
            "{} changed between the image's commit and the revision (wait for CI to build the revision's images): {}",
            image_sources(name).join(", "),
            changed.lines().take(5).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Puts `env` back on the release before its current one. The file's history is read as a
/// stack: a version that equals the one before the top is a rollback (or a revert) and pops
/// it; any other new version is pushed. So a second rollback goes further back, never
/// forward to the release just rolled back from.
pub(crate) fn rollback(root: &Path, env: &str, mode: Mode) -> anyhow::Result<Change> {
    let before = Release::read(root, env)?;
    let file = release::path(env).to_string_lossy().replace('\\', "/");
    let commits = git(root, &["log", "--reverse", "--format=%H", "--", &file])?;
    let mut stack: Vec<Release> = Vec::new();
    for release in commits
        .lines()
        .filter_map(|commit| git(root, &["show", &format!("{commit}:{file}")]).ok())
        .filter_map(|text| Release::parse(&text).ok())
        .chain(std::iter::once(before.clone()))
    {
        let same = |a: &Release, b: &Release| a.revision == b.revision && a.images == b.images;
        if stack.last().is_some_and(|top| same(top, &release)) {
            continue;
        }
        if stack.len() >= 2 && same(&stack[stack.len() - 2], &release) {
            stack.pop();
        } else {
            stack.push(release);
        }
    }
    stack.pop();
    let previous = stack.pop().with_context(|| format!("{file} has no earlier release in git to go back to"))?;
    let after = Release { auto_sync: before.auto_sync, ..previous };
    renderable(root, env, &after.revision)?;
    let message = format!(
        "rollback({env}): back to {}\n\n{env} renders the chart and values of {} again, with the images it ran then\n(it ran {} before this change).\n",
        short(&after.revision),
        after.revision,
        before.revision
    );
    let branch = format!("rollback/{env}-{}", short(&before.revision));
    finish(root, before, after, mode, &branch, &message)
}

/// The ApplicationSets of this branch render `revision` with the charts and values files they
/// name today: a revision that lacks one of them (older than the layout) cannot be deployed
/// by them, so it is no rollback target.
fn renderable(root: &Path, env: &str, revision: &str) -> anyhow::Result<()> {
    let mut needed: Vec<String> = git(root, &["ls-tree", "--name-only", "HEAD", "helm/"])?
        .lines()
        .map(|chart| format!("{chart}/Chart.yaml"))
        .filter(|path| git(root, &["cat-file", "-e", &format!("HEAD:{path}")]).is_ok())
        .collect();
    let values = format!("argocd/envs/{env}/");
    needed.extend(
        git(root, &["ls-tree", "--name-only", "HEAD", &values])?
            .lines()
            .filter(|path| !path.ends_with("release.yaml"))
            .map(str::to_owned),
    );
    let missing: Vec<&String> =
        needed.iter().filter(|path| git(root, &["cat-file", "-e", &format!("{revision}:{path}")]).is_err()).collect();
    if !missing.is_empty() {
        bail!(
            "refusing: {revision} has no {}, which {env}'s Applications render today; it predates this layout and cannot be rolled back to",
            missing.iter().map(|path| path.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

fn finish(
    root: &Path,
    before: Release,
    after: Release,
    mode: Mode,
    branch: &str,
    message: &str,
) -> anyhow::Result<Change> {
    if before == after {
        bail!("{} already runs this release: nothing to change", after.environment);
    }
    let mut change = Change { before, after, branch: None };
    if mode == Mode::DryRun {
        return Ok(change);
    }
    if mode == Mode::Commit {
        let file = release::path(&change.after.environment).to_string_lossy().replace('\\', "/");
        if !git(root, &["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
            bail!("the working tree has uncommitted changes: commit or stash them first (or use --no-commit)");
        }
        git(root, &["switch", "--quiet", "--create", branch])?;
        change.after.write(root)?;
        git(root, &["add", "--", &file])?;
        git(root, &["commit", "--quiet", "--message", message, "--", &file])?;
        change.branch = Some(branch.to_owned());
    } else {
        change.after.write(root)?;
    }
    Ok(change)
}

fn short(revision: &str) -> &str {
    revision.get(..12).unwrap_or(revision)
}

/// `cargo xtask set-image <env> <service> <tag> [<digest>]`.
#[derive(Debug, clap::Args)]
pub(crate) struct SetImageArgs {
    /// The environment whose release.yaml to change.
    #[arg(value_enum)]
    pub(crate) env: Environment,
    /// The service, or `loadtest` (staging's load test).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(release::IMAGES))]
    pub(crate) service: String,
    /// The image tag (immutable: not `latest`).
    pub(crate) tag: String,
    /// The image digest, `sha256:<64 hex digits>`.
    pub(crate) digest: Option<String>,
}

/// `cargo xtask set-image`: records an image in an environment's release (CI, for dev).
pub(crate) fn set_image_command(args: SetImageArgs) -> anyhow::Result<()> {
    let root = crate::root();
    let mut release = Release::read(&root, args.env.as_str())?;
    let before = release.clone();
    release.set_image(&args.service, Image { tag: args.tag, digest: args.digest.unwrap_or_default() })?;
    release.write(&root)?;
    eprint!("{}", diff(&before, &release));
    Ok(())
}

/// `cargo xtask set-revision <env> <commit>`.
#[derive(Debug, clap::Args)]
pub(crate) struct SetRevisionArgs {
    /// The environment whose release.yaml to change.
    #[arg(value_enum)]
    pub(crate) env: Environment,
    /// The commit whose chart and values it renders (a full or abbreviated id, or a ref).
    pub(crate) commit: String,
}

/// `cargo xtask set-revision`: pins an environment to a commit of this branch (CI, for dev).
pub(crate) fn set_revision_command(args: SetRevisionArgs) -> anyhow::Result<()> {
    let root = crate::root();
    let mut release = Release::read(&root, args.env.as_str())?;
    let before = release.clone();
    release.revision = set_revision(&root, &args.commit)?;
    release.write(&root)?;
    eprint!("{}", diff(&before, &release));
    Ok(())
}

/// The full id of `commit`, which must be a commit of this branch.
pub(crate) fn set_revision(root: &Path, commit: &str) -> anyhow::Result<String> {
    let id = git(root, &["rev-parse", "--verify", "--quiet", &format!("{commit}^{{commit}}")])
        .ok()
        .with_context(|| format!("{commit:?} is not a commit of this repository"))?;
    if !is_ancestor(root, &id, "HEAD")? {
        bail!("{commit} is not an ancestor of this branch (HEAD)");
    }
    Ok(id)
}

/// The lines that differ, as a unified-style diff of release.yaml.
pub(crate) fn diff(before: &Release, after: &Release) -> String {
    let file = release::path(&after.environment);
    let mut out = format!("--- a/{0}\n+++ b/{0}\n", file.display());
    let (old, new) = (before.render(), after.render());
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut last_image = "";
    for (index, line) in new.iter().enumerate() {
        if line.starts_with("  ") && !line.starts_with("    ") {
            last_image = line;
        }
        match old.get(index) {
            Some(was) if was == line => {}
            Some(was) => {
                if line.starts_with("    ") {
                    let _ = writeln!(out, " {last_image}");
                }
                let _ = writeln!(out, "-{was}\n+{line}");
            }
            None => {
                let _ = writeln!(out, "+{line}");
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "promote_tests.rs"]
mod tests;
