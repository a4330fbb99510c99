//! `cargo xtask seed`: loads the demo catalog (services/product/seed/demo.sql) into the
//! product database. Idempotent: products are matched by sku. `cargo xtask up` runs it on
//! its own when the catalog is empty.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::infra;

const DATABASE: &str = "shop_product";

pub(crate) fn run() -> anyhow::Result<()> {
    let database = infra::database_url(DATABASE);
    let migrated = psql_in(&database, "SELECT to_regclass('public.products') IS NOT NULL").unwrap_or_default();
    if migrated != "t" {
        bail!("the product database is not set up yet: start the platform once with `cargo xtask up` (it migrates)");
    }
    load(&database)?;
    eprintln!("xtask: demo catalog loaded ({} products)", psql_in(&database, "SELECT count(*) FROM products")?);
    Ok(())
}

/// Loads the demo catalog into the product database at the URL `database` if its catalog is
/// empty (used by `up`).
pub(crate) fn if_empty(database: &str) -> anyhow::Result<()> {
    if psql_in(database, "SELECT count(*) FROM products")? == "0" {
        load(database)?;
        let name = database.rsplit('/').next().and_then(|name| name.split('?').next()).unwrap_or(database);
        eprintln!("xtask: loaded the demo catalog into the empty {name}");
    }
    Ok(())
}

/// Loads the demo catalog into the database at the URL `database`.
fn load(database: &str) -> anyhow::Result<()> {
    let file = crate::root().join("services/product/seed/demo.sql");
    let output = Command::new("psql")
        .args([database, "-q", "-v", "ON_ERROR_STOP=1", "-f"])
        .arg(&file)
        .output()
        .context("cannot run psql")?;
    if !output.status.success() {
        bail!("loading {} failed: {}", file.display(), String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

/// Runs SQL in the database at the URL `database`.
fn psql_in(database: &str, sql: &str) -> anyhow::Result<String> {
    let output = Command::new("psql").args([database, "-tA", "-c", sql]).output().context("cannot run psql")?;
    if !output.status.success() {
        bail!("psql failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
