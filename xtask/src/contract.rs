//! The API contract run: schemathesis (pinned with every dependency and its hash in
//! `xtask/contract/requirements.txt`, installed into `target/contract-venv`) against each
//! service's `/openapi.json`, with every check, once as a customer and once as an admin.
//! Any check switched off for an operation is switched off in `xtask/contract/schemathesis.toml`,
//! next to its reason. A failure names the service, the role and where the full report is.
//!
//! `cargo xtask test` runs it against the smoke's private instance; `cargo xtask contract`
//! against `cargo xtask up`.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::{platform, services};

/// Test cases per operation and phase.
const MAX_EXAMPLES: &str = "30";
/// Fixed, so a failure found once is found again on the next run.
const SEED: &str = "20261204";

/// Who the requests are made as.
#[derive(Clone, Copy, Debug)]
enum Role {
    Customer,
    Admin,
}

/// `cargo xtask contract`: the contract run against `up`'s services.
pub(crate) fn command() -> anyhow::Result<()> {
    let instance = platform::Instance::development(None);
    let urls: Vec<(&'static str, String)> =
        services::ALL.iter().map(|service| (service.name, instance.url(service))).collect();
    run(&urls, &crate::state_dir().join("contract"))
}

/// Runs schemathesis against every service in `urls` (name, base URL) as a customer it
/// registers and as the development admin. Reports go to `report_dir`.
pub(crate) fn run(urls: &[(&'static str, String)], report_dir: &Path) -> anyhow::Result<()> {
    let schemathesis = schemathesis()?;
    let user_url = &urls
        .iter()
        .find(|(name, _)| *name == "user")
        .context("the contract run needs the user service, which issues its tokens")?
        .1;
    let customer = customer_credentials(user_url)?;
    let admin = (platform::admin_email(), platform::admin_password());
    std::fs::create_dir_all(report_dir).with_context(|| format!("cannot create {}", report_dir.display()))?;
    let config = crate::root().join("xtask").join("contract").join("schemathesis.toml");
    let mut failed = Vec::new();
    for (name, url) in urls {
        for (role, (email, password)) in [(Role::Customer, &customer), (Role::Admin, &admin)] {
            // A fresh token for each run: one outlives a run (15 minutes) but not all twelve.
            let token = token(user_url, email, password)?;
            let label = format!("{name}-{}", format!("{role:?}").to_lowercase());
            eprintln!("xtask: == schemathesis: {name} as {role:?}");
            let status = Command::new(&schemathesis)
                .current_dir(report_dir)
                .arg("--config-file")
                .arg(&config)
                .args(["run", &format!("{url}/openapi.json"), "--checks", "all", "--max-examples", MAX_EXAMPLES])
                .args(["--seed", SEED, "--generation-database", "none", "--no-color", "--workers", "1"])
                .args(["--header", &format!("Authorization: Bearer {token}")])
                .args(["--report", "junit", "--report-junit-path"])
                .arg(report_dir.join(format!("{label}.xml")))
                .env("SCHEMATHESIS_HOOKS", "")
                .status()
                .with_context(|| format!("cannot run {}", schemathesis.display()))?;
            if !status.success() {
                failed.push(label);
            }
        }
    }
    if !failed.is_empty() {
        bail!(
            "the API does not keep its OpenAPI contract: {} (what schemathesis printed above; JUnit reports in {})",
            failed.join(", "),
            report_dir.display()
        );
    }
    Ok(())
}

/// The pinned schemathesis, installed once into target/contract-venv.
fn schemathesis() -> anyhow::Result<std::path::PathBuf> {
    let requirements = crate::root().join("xtask").join("contract").join("requirements.txt");
    let python = crate::deploy::ensure_venv(&crate::root().join("target").join("contract-venv"), &[&requirements])?;
    let schemathesis = python.with_file_name("schemathesis");
    if !schemathesis.exists() {
        bail!("the schemathesis package did not install {}", schemathesis.display());
    }
    Ok(schemathesis)
}

/// Registers a customer of its own: its email and password.
fn customer_credentials(user_url: &str) -> anyhow::Result<(String, String)> {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let email = format!("contract-{}-{nanos}@example.com", std::process::id());
    let password = format!("contract-{nanos}");
    let body = json!({"email": email, "password": password, "name": "Contract Customer"});
    let (status, answer) = post(&format!("{user_url}/v1/users"), &body)?;
    if status != 201 {
        bail!("registering the contract run's customer answered {status}: {answer}");
    }
    Ok((email, password))
}

/// An access token for these credentials.
fn token(user_url: &str, email: &str, password: &str) -> anyhow::Result<String> {
    let (status, answer) = post(&format!("{user_url}/v1/auth/login"), &json!({"email": email, "password": password}))?;
    if status != 200 {
        bail!("logging in as {email} answered {status}: {answer}");
    }
    answer["access_token"].as_str().map(str::to_owned).context("the login answer has no access_token")
}

fn post(url: &str, body: &serde_json::Value) -> anyhow::Result<(u16, serde_json::Value)> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start a runtime")?;
    runtime.block_on(async {
        // From a loopback address of its own: schemathesis' failed logins (from 127.0.0.1)
        // count against that client only, so they never lock out the run's own logins.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
            .build()?;
        let response = client.post(url).json(body).send().await.with_context(|| format!("cannot reach {url}"))?;
        let status = response.status().as_u16();
        let answer = response.json::<serde_json::Value>().await.unwrap_or(serde_json::Value::Null);
        Ok((status, answer))
    })
}
