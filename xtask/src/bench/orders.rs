//! The orders the benchmark places (k6's `load-tests/scenarios/orders.js`) and the counts of
//! what the saga made of them, from the services' own rows.

use std::process::{Command, Stdio};

use anyhow::Context as _;

use crate::{
    infra,
    platform::{self, Instance},
    services,
};

/// The database's clock, as the timestamps below are on it.
pub(super) fn db_now(database: &str) -> anyhow::Result<String> {
    infra::psql_in(database, "SELECT now()::text")
}

/// What the k6 orders driver reported.
pub(super) struct Placing {
    pub(super) rate: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) failed: f64,
}

/// Runs the k6 orders driver against `instance` with `settings` as its environment.
pub(super) fn k6_orders(instance: &Instance, settings: &[(&str, String)]) -> anyhow::Result<Placing> {
    let k6 = crate::load::k6()?;
    let dir = crate::root().join("load-tests");
    std::fs::create_dir_all(dir.join("results"))?;
    let mut command = Command::new(k6);
    command
        .current_dir(&dir)
        .args(["run", "--no-usage-report", "--quiet", "scenarios/orders.js"])
        .env("RESULTS_DIR", "results")
        .env("ADMIN_EMAIL", platform::admin_email())
        .env("ADMIN_PASSWORD", platform::admin_password())
        .stdout(Stdio::null());
    for (name, value) in settings {
        command.env(name, value);
    }
    for service in services::ALL {
        command.env(format!("{}_URL", service.name.to_uppercase()), instance.url(service));
    }
    // Thresholds may fail here: the figures are what counts.
    let _ = command.status().context("cannot run k6")?;
    let text = std::fs::read_to_string(dir.join("results/orders.json")).context("k6 wrote no summary")?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    let metric = |name: &str, stat: &str| json["metrics"][name]["values"][stat].as_f64().unwrap_or(f64::NAN);
    let name = "http_req_duration{name:order_place}";
    let place = if json["metrics"][name].is_object() { name } else { "http_req_duration{api:checkout}" };
    let duration = json["state"]["testRunDurationMs"].as_f64().unwrap_or(1.0) / 1000.0;
    Ok(Placing {
        rate: metric("iterations", "count") / duration.max(0.001),
        p50_ms: metric(place, "med"),
        p99_ms: metric(place, "p(99)"),
        failed: metric("http_req_failed", "rate"),
    })
}

/// Orders placed since `since`: (still pending, confirmed).
pub(super) fn outcome_counts(order_db: &str, since: &str) -> anyhow::Result<(usize, usize)> {
    let row = infra::psql_in(
        order_db,
        &format!(
            "SELECT count(*) FILTER (WHERE status = 'pending_payment'), count(*) FILTER (WHERE status = 'confirmed') \
             FROM orders WHERE created_at >= '{since}'"
        ),
    )?;
    let (pending, confirmed) = row.split_once('|').context("psql printed no counts")?;
    Ok((pending.parse()?, confirmed.parse()?))
}

/// Order confirmations stored by the notification service since `since`.
pub(super) fn notified_count(notification_db: &str, since: &str) -> anyhow::Result<usize> {
    Ok(infra::psql_in(
        notification_db,
        &format!("SELECT count(*) FROM notifications WHERE template = 'order_confirmed' AND created_at >= '{since}'"),
    )?
    .parse()?)
}
