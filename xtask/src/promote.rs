//! `cargo xtask promote <from> <to> [--service S] [--tag T] [--dry-run]`: a release moves
//! dev → staging → prod by copying the image that runs in one environment into the next one's
//! values (`argocd/envs/<env>/<service>.yaml`); Argo CD does the rest once the change lands.
//!
//! Only dev → staging and staging → prod are allowed. `--tag` promotes an earlier tag of
//! `<from>` (a rollback of `<to>`), and is refused unless `<from>` ran that tag at some point:
//! its values file holds it now or did in a commit (`git log`). The digest travels with the
//! tag. The diff of every file is printed; `--dry-run` writes nothing.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cli::Environment;

const SERVICES: [&str; 6] = ["user", "product", "cart", "order", "payment", "notification"];
const STEPS: [(&str, &str); 2] = [("dev", "staging"), ("staging", "prod")];

/// What runs in an environment: the image tag and, when CI recorded it, the digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Image {
    pub(crate) tag: String,
    pub(crate) digest: Option<String>,
}

/// One service's change, for the printed diff.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Change {
    pub(crate) service: String,
    pub(crate) file: PathBuf,
    pub(crate) before: Image,
    pub(crate) after: Image,
}

pub(crate) struct Request<'a> {
    pub(crate) from: &'a str,
    pub(crate) to: &'a str,
    pub(crate) service: Option<&'a str>,
    pub(crate) tag: Option<&'a str>,
    pub(crate) write: bool,
}

/// `cargo xtask promote <from> <to> [--service S] [--tag T] [--dry-run]`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The environment whose images to copy (dev or staging).
    #[arg(value_enum)]
    pub(crate) from: Environment,
    /// The next environment (staging or prod).
    #[arg(value_enum)]
    pub(crate) to: Environment,
    /// Promote this service only (default: all six).
    #[arg(long, value_name = "SERVICE", value_parser = clap::builder::PossibleValuesParser::new(SERVICES))]
    pub(crate) service: Option<String>,
    /// Promote this earlier tag of <FROM> (a rollback of <TO>); needs --service and is
    /// refused unless <FROM> ran that tag at some point (now or in its git history).
    #[arg(long, value_name = "TAG")]
    pub(crate) tag: Option<String>,
    /// Print the diff and write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<()> {
    let (from, to) = (args.from.as_str(), args.to.as_str());
    let write = !args.dry_run;
    let request = Request { from, to, service: args.service.as_deref(), tag: args.tag.as_deref(), write };
    let changes = promote(&crate::root(), &request)?;
    eprint!("{}", diff(&changes));
    let changed = changes.iter().filter(|change| change.before != change.after).count();
    if write {
        eprintln!("promote {from} → {to}: {changed} file(s) changed; commit them to release (Argo CD syncs {to}).");
    } else {
        eprintln!("promote {from} → {to}: {changed} file(s) would change (dry run, nothing written).");
    }
    Ok(())
}

/// `cargo xtask set-image <env> <service> <tag> [<digest>]`.
#[derive(Debug, clap::Args)]
pub(crate) struct SetImageArgs {
    /// The environment whose values file to change.
    #[arg(value_enum)]
    pub(crate) env: Environment,
    /// The service, or `loadtest` (the staging load test's image).
    #[arg(value_parser = clap::builder::PossibleValuesParser::new(SERVICES.iter().copied().chain(["loadtest"])))]
    pub(crate) service: String,
    /// The image tag (immutable: not `latest`).
    pub(crate) tag: String,
    /// The image digest, `sha256:<64 hex digits>`.
    pub(crate) digest: Option<String>,
}

/// `cargo xtask set-image`: records the image an environment runs (CI's GitOps commit for dev
/// after a push; the staging load test's image). Every other line of the file is kept.
pub(crate) fn set_image_command(args: SetImageArgs) -> anyhow::Result<()> {
    let SetImageArgs { env, service, tag, digest } = args;
    if digest.as_ref().is_some_and(|digest| {
        !(digest.len() == 71 && digest.starts_with("sha256:") && digest[7..].bytes().all(|b| b.is_ascii_hexdigit()))
    }) {
        bail!("the digest must be sha256:<64 hex digits>");
    }
    let image = Image { tag, digest };
    let change = record(&crate::root(), env.as_str(), &service, &image)?;
    eprint!("{}", diff(&[change]));
    Ok(())
}

/// Writes `image` into `argocd/envs/<env>/<service>.yaml`; returns the change.
pub(crate) fn record(root: &Path, env: &str, service: &str, image: &Image) -> anyhow::Result<Change> {
    if image.tag.is_empty()
        || image.tag == "latest"
        || !image.tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        bail!("{:?} is not an immutable image tag", image.tag);
    }
    let relative = values_file(env, service);
    let text = read(root, &relative)?;
    let before = parse_image(&text).with_context(|| format!("{}", relative.display()))?;
    let updated = set_image(&text, image).with_context(|| format!("{}", relative.display()))?;
    std::fs::write(root.join(&relative), updated).with_context(|| format!("cannot write {}", relative.display()))?;
    Ok(Change { service: service.to_owned(), file: relative, before, after: image.clone() })
}

/// Copies `from`'s images into `to`'s values files (when `request.write`) and returns the
/// changes, unchanged services included.
pub(crate) fn promote(root: &Path, request: &Request<'_>) -> anyhow::Result<Vec<Change>> {
    if !STEPS.contains(&(request.from, request.to)) {
        bail!(
            "cannot promote {} → {}: a release goes dev → staging → prod, one step at a time",
            request.from,
            request.to
        );
    }
    let services: Vec<&str> = match request.service {
        Some(service) if SERVICES.contains(&service) => vec![service],
        Some(other) => bail!("unknown service {other:?}; one of {}", SERVICES.join(", ")),
        None => SERVICES.to_vec(),
    };
    if request.tag.is_some() && request.service.is_none() {
        bail!("--tag promotes one service's earlier tag: add --service");
    }
    let mut changes = Vec::new();
    for service in services {
        let relative_from = values_file(request.from, service);
        let relative_to = values_file(request.to, service);
        let from_text = read(root, &relative_from)?;
        let current = parse_image(&from_text).with_context(|| format!("{}", relative_from.display()))?;
        let after = match request.tag {
            None => current,
            Some(tag) if tag == current.tag => current,
            Some(tag) => {
                history(root, &relative_from)?.into_iter().find(|image| image.tag == tag).with_context(|| {
                    format!(
                        "refusing {tag:?}: {} never ran it (not in {} or its git history)",
                        request.from,
                        relative_from.display()
                    )
                })?
            }
        };
        let to_text = read(root, &relative_to)?;
        let before = parse_image(&to_text).with_context(|| format!("{}", relative_to.display()))?;
        if request.write && before != after {
            let updated = set_image(&to_text, &after).with_context(|| format!("{}", relative_to.display()))?;
            std::fs::write(root.join(&relative_to), updated)
                .with_context(|| format!("cannot write {}", relative_to.display()))?;
        }
        changes.push(Change { service: service.to_owned(), file: relative_to, before, after });
    }
    Ok(changes)
}

fn values_file(env: &str, service: &str) -> PathBuf {
    Path::new("argocd").join("envs").join(env).join(format!("{service}.yaml"))
}

fn read(root: &Path, relative: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(root.join(relative)).with_context(|| format!("cannot read {}", relative.display()))
}

/// Every image the file held in a commit, newest first, then what it holds now.
fn history(root: &Path, relative: &Path) -> anyhow::Result<Vec<Image>> {
    let path = relative.to_string_lossy().replace('\\', "/");
    let output = Command::new("git")
        .current_dir(root)
        .args(["log", "--format=%H", "--", &path])
        .output()
        .context("cannot run git log")?;
    if !output.status.success() {
        bail!("git log failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let mut images = Vec::new();
    for commit in String::from_utf8_lossy(&output.stdout).lines() {
        let shown = Command::new("git").current_dir(root).args(["show", &format!("{commit}:{path}")]).output()?;
        if shown.status.success()
            && let Ok(image) = parse_image(&String::from_utf8_lossy(&shown.stdout))
        {
            images.push(image);
        }
    }
    images.push(parse_image(&read(root, relative)?)?);
    Ok(images)
}

/// The `image:` block: `  tag: "..."` and an optional `  digest: "..."`.
fn parse_image(text: &str) -> anyhow::Result<Image> {
    let mut in_image = false;
    let mut tag = None;
    let mut digest = None;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('#') {
            in_image = line.trim_end() == "image:";
            continue;
        }
        if in_image {
            if let Some(value) = line.strip_prefix("  tag:") {
                tag = Some(unquote(value));
            } else if let Some(value) = line.strip_prefix("  digest:") {
                digest = Some(unquote(value)).filter(|digest| !digest.is_empty());
            }
        }
    }
    let tag = tag.filter(|tag| !tag.is_empty()).context("no `image:` block with a `  tag:` line")?;
    if tag == "latest" {
        bail!("the tag is latest, which is not a release");
    }
    Ok(Image { tag, digest })
}

fn unquote(value: &str) -> String {
    let value = value.split(" #").next().unwrap_or_default().trim();
    value.trim_matches('"').trim_matches('\'').to_owned()
}

/// `text` with the `image:` block's tag (and digest) replaced; every other line kept.
fn set_image(text: &str, image: &Image) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut in_image = false;
    let mut wrote_tag = false;
    for line in text.lines() {
        if !line.starts_with(' ') && !line.trim().is_empty() && !line.starts_with('#') {
            in_image = line.trim_end() == "image:";
        } else if in_image && line.starts_with("  digest:") {
            continue;
        } else if in_image && line.starts_with("  tag:") {
            writeln!(out, "  tag: \"{}\"", image.tag)?;
            if let Some(digest) = &image.digest {
                writeln!(out, "  digest: \"{digest}\"")?;
            }
            wrote_tag = true;
            continue;
        }
        writeln!(out, "{line}")?;
    }
    if !wrote_tag {
        bail!("no `image:` block with a `  tag:` line");
    }
    Ok(out)
}

/// A unified-style diff of the changed files.
pub(crate) fn diff(changes: &[Change]) -> String {
    let mut out = String::new();
    for change in changes {
        if change.before == change.after {
            let _ = writeln!(out, "  {}: {} (unchanged)", change.service, change.after.tag);
            continue;
        }
        let _ = writeln!(out, "--- a/{0}\n+++ b/{0}", change.file.display());
        let _ = writeln!(out, "-  tag: \"{}\"", change.before.tag);
        if let Some(digest) = &change.before.digest {
            let _ = writeln!(out, "-  digest: \"{digest}\"");
        }
        let _ = writeln!(out, "+  tag: \"{}\"", change.after.tag);
        if let Some(digest) = &change.after.digest {
            let _ = writeln!(out, "+  digest: \"{digest}\"");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(root: &Path, args: &[&str]) {
        let status = Command::new("git")
            .current_dir(root)
            .args(["-c", "user.name=test", "-c", "user.email=test@shop.local"])
            .args(args)
            .output()
            .unwrap();
        assert!(status.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&status.stderr));
    }

    fn values(tag: &str, extra: &str) -> String {
        format!("# The image this environment runs.\nimage:\n  tag: \"{tag}\"\n{extra}")
    }

    /// A repository with every env × service file at `tag`.
    fn repo(tag: &str) -> tempdir::Dir {
        let dir = tempdir::Dir::new();
        for env in ["dev", "staging", "prod"] {
            std::fs::create_dir_all(dir.path().join("argocd/envs").join(env)).unwrap();
            for service in SERVICES {
                let extra = if service == "notification" { "config:\n  SMTP_URL: smtp://relay:587\n" } else { "" };
                std::fs::write(dir.path().join(values_file(env, service)), values(tag, extra)).unwrap();
            }
        }
        git(dir.path(), &["init", "--quiet"]);
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "--quiet", "-m", "initial"]);
        dir
    }

    fn set(dir: &Path, env: &str, service: &str, text: &str, commit: bool) {
        std::fs::write(dir.join(values_file(env, service)), text).unwrap();
        if commit {
            git(dir, &["commit", "--quiet", "-am", "bump"]);
        }
    }

    fn tag_of(dir: &Path, env: &str, service: &str) -> Image {
        parse_image(&std::fs::read_to_string(dir.join(values_file(env, service))).unwrap()).unwrap()
    }

    fn request<'a>(from: &'a str, to: &'a str) -> Request<'a> {
        Request { from, to, service: None, tag: None, write: true }
    }

    #[test]
    fn copies_every_tag_and_digest_one_step_and_keeps_other_lines() {
        let dir = repo("sha-aaaaaaa");
        let digest = format!("sha256:{}", "b".repeat(64));
        set(dir.path(), "dev", "order", &values("sha-bbbbbbb", &format!("  digest: \"{digest}\"\n")), true);
        set(dir.path(), "dev", "notification", &values("sha-bbbbbbb", ""), true);
        let changes = promote(dir.path(), &request("dev", "staging")).unwrap();
        assert_eq!(changes.iter().filter(|change| change.before != change.after).count(), 2);
        assert_eq!(tag_of(dir.path(), "staging", "order"), Image { tag: "sha-bbbbbbb".into(), digest: Some(digest) });
        assert_eq!(tag_of(dir.path(), "staging", "cart").tag, "sha-aaaaaaa");
        let notification = std::fs::read_to_string(dir.path().join(values_file("staging", "notification"))).unwrap();
        assert_eq!(notification, values("sha-bbbbbbb", "config:\n  SMTP_URL: smtp://relay:587\n"));
        let printed = diff(&changes);
        assert!(printed.contains("-  tag: \"sha-aaaaaaa\"\n+  tag: \"sha-bbbbbbb\""), "{printed}");
        assert!(printed.contains("cart: sha-aaaaaaa (unchanged)"), "{printed}");
        // prod is untouched until staging → prod.
        assert_eq!(tag_of(dir.path(), "prod", "order").tag, "sha-aaaaaaa");
        promote(dir.path(), &request("staging", "prod")).unwrap();
        assert_eq!(tag_of(dir.path(), "prod", "order").tag, "sha-bbbbbbb");
    }

    #[test]
    fn refuses_skipping_or_reversing_a_step() {
        let dir = repo("sha-aaaaaaa");
        for (from, to) in [("dev", "prod"), ("prod", "staging"), ("staging", "dev"), ("dev", "dev"), ("qa", "prod")] {
            let error = promote(dir.path(), &request(from, to)).unwrap_err().to_string();
            assert!(error.contains("one step at a time"), "{from} → {to}: {error}");
        }
        let error = promote(dir.path(), &Request { service: Some("inventory"), ..request("dev", "staging") })
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown service"), "{error}");
    }

    #[test]
    fn a_tag_the_source_never_had_is_refused_and_nothing_is_written() {
        let dir = repo("sha-aaaaaaa");
        set(dir.path(), "dev", "order", &values("sha-ccccccc", ""), true);
        let refused = Request { service: Some("order"), tag: Some("sha-fffffff"), ..request("dev", "staging") };
        let error = promote(dir.path(), &refused).unwrap_err().to_string();
        assert!(error.contains("refusing \"sha-fffffff\": dev never ran it"), "{error}");
        assert_eq!(tag_of(dir.path(), "staging", "order").tag, "sha-aaaaaaa");
        // staging never ran sha-ccccccc, so prod cannot get it from staging either.
        let skipped = Request { service: Some("order"), tag: Some("sha-ccccccc"), ..request("staging", "prod") };
        assert!(promote(dir.path(), &skipped).unwrap_err().to_string().contains("staging never ran it"));
    }

    #[test]
    fn an_earlier_tag_from_the_history_rolls_back() {
        let dir = repo("sha-aaaaaaa");
        set(dir.path(), "staging", "payment", &values("sha-ddddddd", ""), true);
        promote(dir.path(), &request("staging", "prod")).unwrap();
        assert_eq!(tag_of(dir.path(), "prod", "payment").tag, "sha-ddddddd");
        git(dir.path(), &["commit", "--quiet", "-am", "release"]);
        let rollback = Request { service: Some("payment"), tag: Some("sha-aaaaaaa"), ..request("staging", "prod") };
        let changes = promote(dir.path(), &rollback).unwrap();
        assert_eq!(changes[0].after.tag, "sha-aaaaaaa");
        assert_eq!(tag_of(dir.path(), "prod", "payment").tag, "sha-aaaaaaa");
    }

    #[test]
    fn set_image_records_tag_and_digest_and_refuses_mutable_tags() {
        let dir = repo("sha-aaaaaaa");
        let digest = format!("sha256:{}", "c".repeat(64));
        let image = Image { tag: "sha-fffffff".into(), digest: Some(digest.clone()) };
        let change = record(dir.path(), "dev", "notification", &image).unwrap();
        assert_eq!(change.before.tag, "sha-aaaaaaa");
        let text = std::fs::read_to_string(dir.path().join(values_file("dev", "notification"))).unwrap();
        assert_eq!(
            text,
            values("sha-fffffff", &format!("  digest: \"{digest}\"\nconfig:\n  SMTP_URL: smtp://relay:587\n"))
        );
        for tag in ["latest", "", "a b"] {
            let bad = Image { tag: tag.into(), digest: None };
            assert!(record(dir.path(), "dev", "order", &bad).is_err(), "tag {tag:?}");
        }
        assert_eq!(tag_of(dir.path(), "dev", "order").tag, "sha-aaaaaaa");
    }

    #[test]
    fn dry_run_writes_nothing_and_bad_files_are_named() {
        let dir = repo("sha-aaaaaaa");
        set(dir.path(), "dev", "user", &values("sha-eeeeeee", ""), false);
        let changes = promote(dir.path(), &Request { write: false, ..request("dev", "staging") }).unwrap();
        assert_eq!(changes[0].after.tag, "sha-eeeeeee");
        assert_eq!(tag_of(dir.path(), "staging", "user").tag, "sha-aaaaaaa");
        set(dir.path(), "dev", "cart", "image:\n  repository: x\n", false);
        let error = format!("{:#}", promote(dir.path(), &request("dev", "staging")).unwrap_err());
        assert!(error.contains("argocd/envs/dev/cart.yaml") && error.contains("no `image:` block"), "{error}");
        set(dir.path(), "dev", "cart", &values("latest", ""), false);
        let error = format!("{:#}", promote(dir.path(), &request("dev", "staging")).unwrap_err());
        assert!(error.contains("latest"), "{error}");
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
}
