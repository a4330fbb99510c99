//! `argocd/envs/<env>/release.yaml`: what an environment runs (issue #17, item 2) — the one
//! git revision whose chart and values it renders, whether Argo CD syncs it by itself, and
//! the image of each service (tag and digest). The ApplicationSets read these files from main
//! (argocd/applicationset.yaml); only `cargo xtask promote`, `rollback`, `set-image` and
//! `set-revision` write them, always whole and in one layout, so that a change is a small
//! diff a reviewer reads at a glance.

use std::{fmt::Write as _, path::Path, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// The images a release names: the six services and staging's load test.
pub(crate) const IMAGES: [&str; 7] = ["user", "product", "cart", "order", "payment", "notification", "loadtest"];

/// One image: an immutable tag and, once CI recorded it, the digest (empty when not).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Image {
    pub(crate) tag: String,
    pub(crate) digest: String,
}

/// The contents of one release.yaml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Release {
    pub(crate) environment: String,
    pub(crate) revision: String,
    pub(crate) auto_sync: bool,
    /// In [`IMAGES`] order.
    pub(crate) images: Vec<(String, Image)>,
}

pub(crate) fn path(env: &str) -> PathBuf {
    Path::new("argocd").join("envs").join(env).join("release.yaml")
}

impl Release {
    pub(crate) fn read(root: &Path, env: &str) -> anyhow::Result<Self> {
        let relative = path(env);
        let text = std::fs::read_to_string(root.join(&relative))
            .with_context(|| format!("cannot read {}", relative.display()))?;
        let release = Self::parse(&text).with_context(|| format!("{}", relative.display()))?;
        if release.environment != env {
            bail!("{} says environment {:?}", relative.display(), release.environment);
        }
        Ok(release)
    }

    pub(crate) fn write(&self, root: &Path) -> anyhow::Result<()> {
        let relative = path(&self.environment);
        std::fs::write(root.join(&relative), self.render())
            .with_context(|| format!("cannot write {}", relative.display()))
    }

    #[cfg(test)]
    pub(crate) fn image(&self, name: &str) -> Option<&Image> {
        self.images.iter().find(|(image, _)| image == name).map(|(_, image)| image)
    }

    pub(crate) fn set_image(&mut self, name: &str, image: Image) -> anyhow::Result<()> {
        check_tag(&image.tag)?;
        check_digest(&image.digest)?;
        let slot =
            self.images.iter_mut().find(|(each, _)| each == name).with_context(|| format!("no image {name:?}"))?;
        slot.1 = image;
        Ok(())
    }

    /// The file's one layout (comments are not kept: the header is always this one).
    pub(crate) fn render(&self) -> String {
        let env = &self.environment;
        let mut out = format!(
            "# What {env} runs (issue #17): the chart and values of one commit of main, and the images.\n\
             # Written by `cargo xtask promote` (staging, prod) and by CI (dev); a rollback is\n\
             # `cargo xtask rollback {env}`, the release before this one. Do not edit by hand.\n"
        );
        let _ = writeln!(out, "environment: {env}");
        let _ = writeln!(out, "revision: \"{}\"", self.revision);
        let _ = writeln!(out, "autoSync: {}", self.auto_sync);
        out.push_str("images:\n");
        for (name, image) in &self.images {
            let _ = writeln!(out, "  {name}:\n    tag: \"{}\"\n    digest: \"{}\"", image.tag, image.digest);
        }
        out
    }

    /// Reads the layout [`Release::render`] writes; anything else is an error naming the line.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        let (mut environment, mut revision, mut auto_sync) = (None, None, None);
        let mut images: Vec<(String, Image)> = Vec::new();
        let mut in_images = false;
        for (number, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line)) {
            let content = line.split(" #").next().unwrap_or_default().trim_end();
            if content.trim().is_empty() || content.trim_start().starts_with('#') {
                continue;
            }
            let bad = || format!("line {number}: {line:?} is not part of a release file");
            if let Some(name) = content.strip_prefix("  ").and_then(|rest| rest.strip_suffix(':'))
                && in_images
                && !name.starts_with(' ')
            {
                if !IMAGES.contains(&name) {
                    bail!("line {number}: unknown image {name:?} (one of {})", IMAGES.join(", "));
                }
                if images.iter().any(|(each, _)| each == name) {
                    bail!("line {number}: image {name:?} twice");
                }
                images.push((name.to_owned(), Image::default()));
                continue;
            }
            if let Some(field) = content.strip_prefix("    ") {
                let (_, image) = images.last_mut().filter(|_| in_images).with_context(bad)?;
                match field.split_once(':') {
                    Some(("tag", value)) => image.tag = unquote(value),
                    Some(("digest", value)) => image.digest = unquote(value),
                    _ => bail!(bad()),
                }
                continue;
            }
            in_images = false;
            match content.split_once(':') {
                Some(("environment", value)) => environment = Some(unquote(value)),
                Some(("revision", value)) => revision = Some(unquote(value)),
                Some(("autoSync", value)) => {
                    auto_sync = Some(match value.trim() {
                        "true" => true,
                        "false" => false,
                        other => bail!("line {number}: autoSync is {other:?}, not true or false"),
                    });
                }
                Some(("images", "")) => in_images = true,
                _ => bail!(bad()),
            }
        }
        let environment = environment.context("no `environment:`")?;
        let revision = revision.context("no `revision:`")?;
        if !is_commit_id(&revision) {
            bail!("revision {revision:?} is not a full commit id (40 hex digits)");
        }
        for name in IMAGES {
            let (_, image) =
                images.iter().find(|(each, _)| each == name).with_context(|| format!("no image {name:?}"))?;
            check_tag(&image.tag).with_context(|| format!("image {name}"))?;
            check_digest(&image.digest).with_context(|| format!("image {name}"))?;
        }
        images.sort_by_key(|(name, _)| IMAGES.iter().position(|each| each == name));
        Ok(Self { environment, revision, auto_sync: auto_sync.context("no `autoSync:`")?, images })
    }
}

fn unquote(value: &str) -> String {
    value.trim().trim_matches('"').trim_matches('\'').to_owned()
}

pub(crate) fn is_commit_id(text: &str) -> bool {
    text.len() == 40 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An immutable tag: never empty, never `latest`, only the characters of an OCI tag.
pub(crate) fn check_tag(tag: &str) -> anyhow::Result<()> {
    if tag.is_empty()
        || tag == "latest"
        || tag.len() > 128
        || !tag.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        bail!("{tag:?} is not an immutable image tag");
    }
    Ok(())
}

/// Empty (not recorded yet) or `sha256:<64 hex digits>`.
pub(crate) fn check_digest(digest: &str) -> anyhow::Result<()> {
    let hex = digest.strip_prefix("sha256:");
    if !digest.is_empty()
        && !hex
            .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    {
        bail!("the digest {digest:?} is not sha256:<64 lowercase hex digits>");
    }
    Ok(())
}

/// Runs git in `root`; its standard output, trimmed, or an error with its standard error.
pub(crate) fn git(root: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git").current_dir(root).args(args).output().context("cannot run git")?;
    if !output.status.success() {
        bail!("git {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Whether `ancestor` is `descendant` or one of its ancestors.
pub(crate) fn is_ancestor(root: &Path, ancestor: &str, descendant: &str) -> anyhow::Result<bool> {
    let status = Command::new("git")
        .current_dir(root)
        .args(["merge-base", "--is-ancestor", ancestor, descendant])
        .status()
        .context("cannot run git merge-base")?;
    match status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => bail!(
            "git merge-base --is-ancestor {ancestor} {descendant} failed (is {ancestor} a commit of this repository?)"
        ),
    }
}
