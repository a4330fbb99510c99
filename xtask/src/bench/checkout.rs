//! The checkout transaction on its own: order-service's statement (order, lines and outbox
//! row in one statement) run by the service's own store function (its `place-bench`
//! example), next to pgbench running the identical statement.

use std::{
    process::{Child, Command},
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{Context, Figure, SECONDS, generators::pgbench_prepared};
use crate::{infra, services::Service};

/// The checkout's figures. Stops the order service (see below) and leaves it stopped.
pub(super) fn measure(
    context: &Context<'_>,
    children: &mut [(&'static Service, Child)],
) -> anyhow::Result<Vec<Figure>> {
    let order_db = &context.order_db;
    let mut figures = Vec::new();
    eprintln!("xtask: == checkout transaction (order + lines + outbox, one statement)");
    // The measured rows land in the order database's outbox: stop the service first, so its
    // relay does not try to publish them.
    if let Some((_, child)) = children.iter_mut().find(|(service, _)| service.name == "order") {
        infra::terminate(child, Duration::from_secs(10));
    }
    let pg_checkout = pgbench_checkout(order_db)?;
    let closed = place_bench(order_db, &["8", &SECONDS.to_string()])?;
    let open = place_bench(order_db, &["32", &SECONDS.to_string(), "1000"])?;
    figures.push(Figure {
        name: "checkout transaction as order-service runs it (orders/s, 8 clients)".into(),
        measured: format!("{:.0} orders/s, p99 {:.2} ms", closed.rate, closed.p99_ms),
        baseline: format!("pgbench, the identical statement, 8 clients: {pg_checkout:.0} tps"),
        ratio: Some(closed.rate / pg_checkout),
        target: "≥ 0.9× pgbench".into(),
        met: Some(closed.rate >= 0.9 * pg_checkout),
    });
    figures.push(Figure {
        name: "checkout transaction, p99 at 1,000 orders/s open loop".into(),
        measured: format!("p99 {:.2} ms (achieved {:.0} orders/s)", open.p99_ms, open.rate),
        baseline: "-".into(),
        ratio: None,
        target: "≤ 50 ms".into(),
        met: Some(open.p99_ms <= 50.0 && open.rate >= 950.0),
    });
    Ok(figures)
}

/// What place-bench reported.
struct PlaceBench {
    rate: f64,
    p99_ms: f64,
}

/// order-service's place-bench example: the service's own store function, in its own process.
fn place_bench(database: &str, args: &[&str]) -> anyhow::Result<PlaceBench> {
    let binary = crate::build_dir("release").join("examples/place-bench");
    let output = Command::new(binary)
        .arg(infra::database_url(database))
        .args(args)
        .output()
        .context("cannot run place-bench")?;
    if !output.status.success() {
        bail!("place-bench failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let numbers: Vec<f64> = text.split_whitespace().filter_map(|number| number.parse().ok()).collect();
    match numbers.as_slice() {
        [rate, _p50, p99] => Ok(PlaceBench { rate: *rate, p99_ms: *p99 }),
        _ => bail!("place-bench printed {text:?}"),
    }
}

/// pgbench running order-service's checkout statement (`PLACE_SQL`, printed by its
/// place-bench example) with 8 clients, its parameters as literals: one order with one line,
/// no idempotency answer, one outbox row.
fn pgbench_checkout(database: &str) -> anyhow::Result<f64> {
    let output = Command::new(crate::build_dir("release").join("examples/place-bench"))
        .arg("sql")
        .output()
        .context("cannot run place-bench")?;
    if !output.status.success() {
        bail!("place-bench sql failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let statement = place_statement(String::from_utf8_lossy(&output.stdout).trim())?;
    let script = crate::root().join("target").join("bench-checkout.sql");
    std::fs::write(&script, format!("{statement};\n"))?;
    pgbench_prepared(database, &script, 8, &[])
}

/// `PLACE_SQL` with its 22 parameters as literal values.
fn place_statement(sql: &str) -> anyhow::Result<String> {
    let values = [
        "gen_random_uuid()",
        "gen_random_uuid()",
        "'pending_payment'",
        "1999",
        "'USD'",
        "'{\"name\":\"Ada Lovelace\",\"line1\":\"12 St James Square\",\"city\":\"London\",\"postal_code\":\"SW1Y 4JH\",\"country\":\"GB\"}'::jsonb",
        "now()",
        "ARRAY[gen_random_uuid()]",
        "ARRAY['Desk lamp']",
        "ARRAY[1]",
        "ARRAY[1999::bigint]",
        "NULL::int",
        "NULL::jsonb",
        "NULL::text",
        "gen_random_uuid()",
        "'bench.shop.order.v1'",
        "gen_random_uuid()::text",
        "'shop.order.v1.OrderPlaced'",
        "'/shop/order'",
        "'\\x0a2430313930'::bytea",
        "NULL::text",
        "NULL::text",
    ];
    let mut text = sql.to_owned();
    for (index, value) in values.iter().enumerate().rev() {
        text = text.replace(&format!("${}", index + 1), value);
    }
    if text.contains('$') {
        bail!("PLACE_SQL has a parameter the benchmark does not fill: {text}");
    }
    Ok(text)
}
