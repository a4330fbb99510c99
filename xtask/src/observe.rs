//! Prometheus beside a running instance of the platform: `cargo xtask up --observe`, and the
//! dashboard check of `cargo xtask test`. The work is `xtask/deploy/observe.py` (it renders
//! the chart's PrometheusRules, writes the configuration and becomes Debian's Prometheus,
//! unpacked into target/tools); this module starts, checks and stops it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{infra, platform::Instance, services};

/// A running Prometheus, stopped when dropped.
pub(crate) struct Prometheus {
    child: Option<Child>,
    pub(crate) url: String,
}

impl Prometheus {
    /// Starts Prometheus on `port`, scraping every service of `instance` (labelled
    /// `job=<service>`, `namespace=shop-local`), with its files and log under `dir`.
    pub(crate) fn start(dir: &Path, port: u16, instance: &Instance) -> anyhow::Result<Self> {
        if dir.exists() {
            fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
        }
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let targets: Vec<String> = services::ALL
            .iter()
            .map(|service| format!("{}=127.0.0.1:{}", service.name, instance.port(service)))
            .collect();
        let log = fs::File::create(dir.join("prometheus.log")).context("cannot create the Prometheus log")?;
        let child = Command::new(crate::deploy::venv()?)
            .arg(script())
            .args(["start", "--port", &port.to_string(), "--targets", &targets.join(","), "--dir"])
            .arg(dir)
            .current_dir(crate::root())
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("cannot share the Prometheus log")?)
            .stderr(log)
            .spawn()
            .context("cannot start Prometheus (xtask/deploy/observe.py)")?;
        let prometheus = Self { child: Some(child), url: format!("http://127.0.0.1:{port}") };
        // The first start unpacks Debian's package; later ones are up in a second.
        infra::wait_until_reachable("Prometheus", &format!("127.0.0.1:{port}"), Duration::from_secs(180))
            .with_context(|| format!("see {}", dir.join("prometheus.log").display()))?;
        Ok(prometheus)
    }

    /// Evaluates every panel query of the chart's dashboards against it, once it has
    /// scraped every service twice.
    pub(crate) fn check_dashboard(&self) -> anyhow::Result<()> {
        let names: Vec<&str> = services::ALL.iter().map(|service| service.name).collect();
        let status = Command::new(crate::deploy::venv()?)
            .arg(script())
            .args(["check-dashboard", "--url", &self.url, "--services", &names.join(",")])
            .current_dir(crate::root())
            .status()
            .context("cannot run the dashboard check")?;
        if !status.success() {
            bail!("a dashboard query does not work against the services' metrics ({status})");
        }
        Ok(())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            infra::terminate(&mut child, Duration::from_secs(5));
        }
    }
}

fn script() -> PathBuf {
    crate::root().join("xtask").join("deploy").join("observe.py")
}
