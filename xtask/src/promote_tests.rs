//! `cargo xtask promote` and `rollback` on scratch git repositories.

use std::path::Path;

use super::*;
use crate::release::IMAGES;

fn run_git(root: &Path, args: &[&str]) -> String {
    git(root, args).unwrap()
}

fn release(env: &str, revision: &str, tag: &str) -> Release {
    Release {
        environment: env.to_owned(),
        revision: revision.to_owned(),
        auto_sync: env != "prod",
        images: IMAGES
            .iter()
            .map(|name| ((*name).to_owned(), Image { tag: tag.to_owned(), digest: String::new() }))
            .collect(),
    }
}

fn commit_all(root: &Path, message: &str) -> String {
    run_git(root, &["add", "-A"]);
    run_git(root, &["commit", "--quiet", "-m", message]);
    run_git(root, &["rev-parse", "HEAD"])
}

/// A repository on main: c0 (a chart), c1 (the three releases at c0), c2 (a chart change),
/// c3 (dev moved to c2 with new images, digests recorded). Returns (dir, c0, c2).
fn repo() -> (tempdir::Dir, String, String) {
    let dir = tempdir::Dir::new();
    let root = dir.path();
    run_git(root, &["init", "--quiet", "--initial-branch", "main"]);
    run_git(root, &["config", "user.name", "test"]);
    run_git(root, &["config", "user.email", "test@shop.local"]);
    std::fs::create_dir_all(root.join("helm")).unwrap();
    std::fs::write(root.join("helm/chart.yaml"), "version: 1\n").unwrap();
    std::fs::create_dir_all(root.join("services")).unwrap();
    std::fs::write(root.join("services/main.rs"), "fn main() {}\n").unwrap();
    let c0 = commit_all(root, "chart v1");
    for env in ["dev", "staging", "prod"] {
        std::fs::create_dir_all(root.join("argocd/envs").join(env)).unwrap();
        release(env, &c0, &format!("sha-{c0}")).write(root).unwrap();
    }
    commit_all(root, "releases");
    std::fs::write(root.join("services/main.rs"), "fn main() { serve() }\n").unwrap();
    std::fs::write(root.join("helm/chart.yaml"), "version: 2\n").unwrap();
    let c2 = commit_all(root, "chart v2: a new probe");
    let mut dev = Release::read(root, "dev").unwrap();
    dev.revision = c2.clone();
    for name in IMAGES {
        dev.set_image(name, Image { tag: format!("sha-{c2}"), digest: format!("sha256:{}", "b".repeat(64)) }).unwrap();
    }
    dev.write(root).unwrap();
    commit_all(root, "deploy(dev): c2");
    (dir, c0, c2)
}

fn changed_files(root: &Path) -> String {
    run_git(root, &["show", "--name-only", "--format=", "HEAD"])
}

#[test]
fn promote_moves_revision_and_images_together_on_a_branch_ready_for_review() {
    let (dir, c0, c2) = repo();
    let root = dir.path();
    let change = promote(root, "dev", "staging", Mode::Commit).unwrap();
    let branch = format!("promote/staging-{}", &c2[..12]);
    assert_eq!(change.branch.as_deref(), Some(&*branch));
    assert_eq!(run_git(root, &["branch", "--show-current"]), branch);
    assert_eq!(changed_files(root), "argocd/envs/staging/release.yaml", "one file, one reviewable change");
    let staging = Release::read(root, "staging").unwrap();
    let dev = Release::read(root, "dev").unwrap();
    assert_eq!((staging.revision.as_str(), &staging.images, staging.auto_sync), (c2.as_str(), &dev.images, true));
    assert_eq!(Release::read(root, "prod").unwrap().revision, c0, "prod is not touched");
    let message = run_git(root, &["log", "-1", "--format=%B"]);
    assert!(message.starts_with(&format!("promote(staging): {} from dev", &c2[..12])), "{message}");
    assert!(
        message.contains("chart v2: a new probe") && !message.contains("chart v1"),
        "the commits shipped: {message}"
    );
    let printed = diff(&change.before, &change.after);
    assert!(printed.contains(&format!("-revision: \"{c0}\"\n+revision: \"{c2}\"")), "{printed}");
    assert!(printed.contains(&format!(" \x20 order:\n-    tag: \"sha-{c0}\"\n+    tag: \"sha-{c2}\"")), "{printed}");

    // The next step: staging → prod, keeping prod's manual sync.
    run_git(root, &["switch", "--quiet", "main"]);
    run_git(root, &["merge", "--quiet", "--ff-only", &branch]);
    promote(root, "staging", "prod", Mode::Commit).unwrap();
    let prod = Release::read(root, "prod").unwrap();
    assert_eq!((prod.revision.as_str(), prod.auto_sync), (c2.as_str(), false));
}

#[test]
fn a_revision_that_is_not_on_the_branch_is_refused_and_nothing_is_written() {
    let (dir, _, _) = repo();
    let root = dir.path();
    run_git(root, &["switch", "--quiet", "--create", "side"]);
    std::fs::write(root.join("helm/chart.yaml"), "version: experimental\n").unwrap();
    let side = commit_all(root, "an experiment never merged");
    run_git(root, &["switch", "--quiet", "main"]);
    let mut dev = Release::read(root, "dev").unwrap();
    dev.revision = side;
    dev.write(root).unwrap();
    commit_all(root, "dev runs the experiment");
    let staging = std::fs::read_to_string(root.join("argocd/envs/staging/release.yaml")).unwrap();
    let error = format!("{:#}", promote(root, "dev", "staging", Mode::Commit).unwrap_err());
    assert!(error.contains("is not an ancestor of this branch"), "{error}");
    assert_eq!(std::fs::read_to_string(root.join("argocd/envs/staging/release.yaml")).unwrap(), staging);
    assert_eq!(run_git(root, &["branch", "--show-current"]), "main");
    assert!(format!("{:#}", set_revision(root, "side").unwrap_err()).contains("not an ancestor"));
}

#[test]
fn an_environment_is_never_moved_backwards_or_sideways_and_steps_are_not_skipped() {
    let (dir, c0, c2) = repo();
    let root = dir.path();
    let mut prod = Release::read(root, "prod").unwrap();
    prod.revision = c2;
    prod.write(root).unwrap();
    commit_all(root, "prod ahead of staging");
    let error = format!("{:#}", promote(root, "staging", "prod", Mode::Commit).unwrap_err());
    assert!(error.contains("not an ancestor") && error.contains("cargo xtask rollback prod"), "{error}");
    assert_eq!(Release::read(root, "staging").unwrap().revision, c0);
    for (from, to) in [("dev", "prod"), ("prod", "staging"), ("staging", "dev"), ("dev", "dev")] {
        let error = format!("{:#}", promote(root, from, to, Mode::DryRun).unwrap_err());
        assert!(error.contains("one step at a time"), "{from} → {to}: {error}");
    }
}

#[test]
fn images_older_than_the_code_of_their_revision_are_not_promoted() {
    let (dir, _, c2) = repo();
    let root = dir.path();
    // A code change lands; dev's revision moves to it before CI has built its images.
    std::fs::write(root.join("services/main.rs"), "fn main() { serve_better() }\n").unwrap();
    let c4 = commit_all(root, "a new setting the chart now passes");
    let mut dev = Release::read(root, "dev").unwrap();
    dev.revision = c4;
    dev.write(root).unwrap();
    commit_all(root, "dev pinned ahead of its images");
    let error = format!("{:#}", promote(root, "dev", "staging", Mode::DryRun).unwrap_err());
    assert!(error.contains(&format!("sha-{c2}")) && error.contains("services/main.rs"), "{error}");
    // An image CI never pushed is refused too.
    let mut dev = Release::read(root, "dev").unwrap();
    dev.revision = c2.clone();
    dev.set_image("cart", Image { tag: "sha-0123456".into(), digest: String::new() }).unwrap();
    dev.write(root).unwrap();
    commit_all(root, "dev runs an image CI never pushed");
    let error = format!("{:#}", promote(root, "dev", "staging", Mode::DryRun).unwrap_err());
    assert!(error.contains("not a tag CI pushes"), "{error}");
    // And one whose digest CI did not record.
    dev.set_image("cart", Image { tag: format!("sha-{c2}"), digest: String::new() }).unwrap();
    dev.write(root).unwrap();
    commit_all(root, "dev runs an image without its digest");
    let error = format!("{:#}", promote(root, "dev", "staging", Mode::DryRun).unwrap_err());
    assert!(error.contains("no digest recorded"), "{error}");
}

#[test]
fn a_dry_run_writes_nothing_and_a_dirty_tree_is_refused() {
    let (dir, c0, _) = repo();
    let root = dir.path();
    let change = promote(root, "dev", "staging", Mode::DryRun).unwrap();
    assert!(change.branch.is_none() && change.after.revision != c0);
    assert_eq!(Release::read(root, "staging").unwrap().revision, c0);
    assert_eq!(run_git(root, &["status", "--porcelain"]), "");
    std::fs::write(root.join("helm/chart.yaml"), "version: uncommitted\n").unwrap();
    let error = format!("{:#}", promote(root, "dev", "staging", Mode::Commit).unwrap_err());
    assert!(error.contains("uncommitted changes"), "{error}");
    assert_eq!(run_git(root, &["branch", "--show-current"]), "main");
    promote(root, "dev", "staging", Mode::Write).unwrap();
    assert_ne!(Release::read(root, "staging").unwrap().revision, c0, "--no-commit writes the file");
}

#[test]
fn rollback_restores_the_release_before_the_current_one() {
    let (dir, c0, c2) = repo();
    let root = dir.path();
    let first = promote(root, "dev", "staging", Mode::Commit).unwrap();
    run_git(root, &["switch", "--quiet", "main"]);
    run_git(root, &["merge", "--quiet", "--ff-only", first.branch.as_deref().unwrap()]);
    assert_eq!(Release::read(root, "staging").unwrap().revision, c2);
    let change = rollback(root, "staging", Mode::Commit).unwrap();
    assert_eq!(change.branch.as_deref(), Some(&*format!("rollback/staging-{}", &c2[..12])));
    let staging = Release::read(root, "staging").unwrap();
    assert_eq!(
        (staging.revision.as_str(), staging.image("order").unwrap().tag.clone()),
        (c0.as_str(), format!("sha-{c0}"))
    );
    assert_eq!(changed_files(root), "argocd/envs/staging/release.yaml");
    assert!(
        run_git(root, &["log", "-1", "--format=%s"]).starts_with(&format!("rollback(staging): back to {}", &c0[..12]))
    );
    let error = format!("{:#}", rollback(root, "prod", Mode::DryRun).unwrap_err());
    assert!(error.contains("no earlier release"), "prod never changed: {error}");

    // A second rollback goes further back, never forward to what was just rolled back from.
    run_git(root, &["switch", "--quiet", "main"]);
    run_git(root, &["merge", "--quiet", "--ff-only", change.branch.as_deref().unwrap()]);
    let error = format!("{:#}", rollback(root, "staging", Mode::DryRun).unwrap_err());
    assert!(error.contains("no earlier release"), "staging is back on its first release: {error}");
}

#[test]
fn rollbacks_walk_back_through_the_releases_in_order() {
    let (dir, c0, c2) = repo();
    let root = dir.path();
    // staging: c0 (first), c2, then c3 (a later chart change promoted from dev).
    for round in 0..2 {
        let change = promote(root, "dev", "staging", Mode::Commit).unwrap();
        run_git(root, &["switch", "--quiet", "main"]);
        run_git(root, &["merge", "--quiet", "--ff-only", change.branch.as_deref().unwrap()]);
        std::fs::write(root.join("helm/chart.yaml"), format!("version: 3.{round}\n")).unwrap();
        let c3 = commit_all(root, "chart v3");
        let mut dev = Release::read(root, "dev").unwrap();
        dev.revision = c3;
        dev.write(root).unwrap();
        commit_all(root, "deploy(dev): c3");
    }
    let c3 = Release::read(root, "staging").unwrap().revision;
    assert_ne!(c3, c2);
    for expected in [&c2, &c0] {
        let change = rollback(root, "staging", Mode::Commit).unwrap();
        assert_eq!(&change.after.revision, expected);
        run_git(root, &["switch", "--quiet", "main"]);
        run_git(root, &["merge", "--quiet", "--ff-only", change.branch.as_deref().unwrap()]);
    }
    assert!(rollback(root, "staging", Mode::DryRun).is_err(), "nothing before the first release");
}

#[test]
fn a_revision_older_than_the_layout_is_no_rollback_target() {
    let (dir, _, c2) = repo();
    let root = dir.path();
    let first = promote(root, "dev", "staging", Mode::Commit).unwrap();
    run_git(root, &["switch", "--quiet", "main"]);
    run_git(root, &["merge", "--quiet", "--ff-only", first.branch.as_deref().unwrap()]);
    // The platform chart and a values file arrive after c0, staging's first release.
    std::fs::create_dir_all(root.join("helm/shop-env")).unwrap();
    std::fs::write(root.join("helm/shop-env/Chart.yaml"), "name: shop-env\n").unwrap();
    std::fs::write(root.join("argocd/envs/staging/platform.yaml"), "environment: staging\n").unwrap();
    commit_all(root, "the platform chart");
    let staging = std::fs::read_to_string(root.join("argocd/envs/staging/release.yaml")).unwrap();
    let error = format!("{:#}", rollback(root, "staging", Mode::Commit).unwrap_err());
    assert!(
        error.contains("helm/shop-env/Chart.yaml") && error.contains("argocd/envs/staging/platform.yaml"),
        "{error}"
    );
    assert_eq!(std::fs::read_to_string(root.join("argocd/envs/staging/release.yaml")).unwrap(), staging);
    assert_eq!(Release::read(root, "staging").unwrap().revision, c2);
    assert_eq!(run_git(root, &["branch", "--show-current"]), "main");
}

#[test]
fn release_files_are_read_strictly() {
    let good = release("prod", &"a".repeat(40), "sha-aaaaaaa");
    assert_eq!(Release::parse(&good.render()).unwrap(), good);
    let text = good.render();
    let cases = [
        (text.replace(&"a".repeat(40), "main"), "not a full commit id"),
        (text.replacen("sha-aaaaaaa", "latest", 1), "not an immutable image tag"),
        (text.replacen("digest: \"\"", "digest: \"sha256:abc\"", 1), "not sha256"),
        (text.replace("  loadtest:\n    tag: \"sha-aaaaaaa\"\n    digest: \"\"\n", ""), "no image \"loadtest\""),
        (text.replace("  cart:", "  basket:"), "unknown image \"basket\""),
        (text.replace("autoSync: false", "autoSync: sometimes"), "not true or false"),
        (text.replace("revision:", "revison:"), "not part of a release file"),
    ];
    for (text, expected) in cases {
        let error = format!("{:#}", Release::parse(&text).unwrap_err());
        assert!(error.contains(expected), "expected {expected:?}, got {error}");
    }
}

/// A temporary directory removed on drop (the xtask has no tempfile dependency).
mod tempdir {
    use std::path::{Path, PathBuf};

    pub(super) struct Dir(PathBuf);

    impl Dir {
        pub(super) fn new() -> Self {
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!("xtask-promote-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }

        pub(super) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
