//! The saga at a fixed rate: orders placed by k6 (open loop), then each one's time from
//! placed to confirmed (two Kafka hops) and to its notification stored (three), from the
//! services' own rows rather than by polling.

use std::{
    collections::HashMap,
    thread,
    time::{Duration, Instant},
};

use super::{
    Context, Figure,
    orders::{db_now, k6_orders, notified_count, outcome_counts},
};
use crate::infra;

/// The saga's target rate: 200 orders/s.
const SAGA_RATE: u32 = 200;
/// A rate this machine sustains with everything on it, for the saga's own latency.
const SAGA_LOW_RATE: u32 = 20;

/// The saga's figures: at a rate the machine sustains, and at the target's rate.
pub(super) fn measure(context: &Context<'_>) -> anyhow::Result<Vec<Figure>> {
    let Context { instance, order_db, notification_db, .. } = context;
    let mut figures = Vec::new();
    // At a rate the 2 shared cores sustain, the saga's own latency; at the target's rate,
    // what this machine makes of it (every process, the load generator included, shares
    // the two cores, so that one shows the queue once the rate is past capacity).
    for (rate, seconds) in [(SAGA_LOW_RATE, 20), (SAGA_RATE, 15)] {
        eprintln!("xtask: == order → confirmed → notification at {rate} orders/s (k6, open loop)");
        let since = db_now(order_db)?;
        let settings = [("RATE", rate.to_string()), ("DURATION", format!("{seconds}s"))];
        let placing = k6_orders(instance, &settings)?;
        let saga = saga_timings(order_db, notification_db, &since, Duration::from_secs(120))?;
        figures.push(Figure {
            name: format!("checkout, POST /v1/orders end to end at {rate}/s open loop (cart, prices, hold, order)"),
            measured: format!(
                "{:.0} orders/s placed, p50 {:.1} ms, p99 {:.1} ms, {:.2}% failed",
                placing.rate,
                placing.p50_ms,
                placing.p99_ms,
                placing.failed * 100.0
            ),
            baseline: "-".into(),
            ratio: None,
            target: "(reported; the transaction's own figure is below)".into(),
            met: None,
        });
        figures.push(Figure {
            name: format!("order placed → confirmed (2 Kafka hops) at {rate} orders/s"),
            measured: format!(
                "p50 {:.0} ms, p99 {:.0} ms ({} orders)",
                saga.confirmed_p50, saga.confirmed_p99, saga.orders
            ),
            baseline: "-".into(),
            ratio: None,
            target: "(part of the next row)".into(),
            met: None,
        });
        let met = saga.notified_p50 <= 30.0
            && saga.notified_p99 <= 150.0
            && saga.notified == saga.orders
            && placing.rate >= 0.95 * f64::from(rate);
        figures.push(Figure {
            name: format!("order placed → notification stored (3 Kafka hops) at {rate} orders/s"),
            measured: format!(
                "p50 {:.0} ms, p99 {:.0} ms ({} of {} notified)",
                saga.notified_p50, saga.notified_p99, saga.notified, saga.orders
            ),
            baseline: "-".into(),
            ratio: None,
            target: if rate == SAGA_RATE { "p50 ≤ 30 ms, p99 ≤ 150 ms".into() } else { "(reported)".into() },
            met: (rate == SAGA_RATE).then_some(met),
        });
    }
    Ok(figures)
}

/// The saga's timings, ms from the order's creation.
struct Saga {
    orders: usize,
    notified: usize,
    confirmed_p50: f64,
    confirmed_p99: f64,
    notified_p50: f64,
    notified_p99: f64,
}

/// Waits (up to `patience`) until every order placed since `since` has left
/// pending_payment and been notified, then times each from the services' own rows.
fn saga_timings(order_db: &str, notification_db: &str, since: &str, patience: Duration) -> anyhow::Result<Saga> {
    let waited = Instant::now();
    loop {
        let (pending, confirmed) = outcome_counts(order_db, since)?;
        let notified = notified_count(notification_db, since)?;
        if (pending == 0 && notified >= confirmed) || waited.elapsed() > patience {
            break;
        }
        thread::sleep(Duration::from_millis(250));
    }
    let orders = rows(
        order_db,
        &format!(
            "SELECT id, extract(epoch FROM created_at), extract(epoch FROM updated_at) FROM orders \
             WHERE created_at >= '{since}' AND status = 'confirmed'"
        ),
    )?;
    let notified: HashMap<String, f64> = rows(
        notification_db,
        &format!(
            "SELECT split_part(subject, ' ', 2), extract(epoch FROM created_at) FROM notifications \
             WHERE template = 'order_confirmed' AND created_at >= '{since}'"
        ),
    )?
    .into_iter()
    .filter_map(|row| Some((row.first()?.clone(), row.get(1)?.parse().ok()?)))
    .collect();
    let mut to_confirmed = Vec::new();
    let mut to_notified = Vec::new();
    for row in &orders {
        let (Some(id), Some(placed), Some(confirmed)) = (
            row.first(),
            row.get(1).and_then(|value| value.parse::<f64>().ok()),
            row.get(2).and_then(|value| value.parse::<f64>().ok()),
        ) else {
            continue;
        };
        to_confirmed.push((confirmed - placed) * 1000.0);
        if let Some(at) = notified.get(id) {
            to_notified.push((at - placed) * 1000.0);
        }
    }
    Ok(Saga {
        orders: orders.len(),
        notified: to_notified.len(),
        confirmed_p50: percentile(&mut to_confirmed, 0.5),
        confirmed_p99: percentile(&mut to_confirmed, 0.99),
        notified_p50: percentile(&mut to_notified, 0.5),
        notified_p99: percentile(&mut to_notified, 0.99),
    })
}

/// The rows of `sql` in `database`, each split into its columns.
fn rows(database: &str, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    Ok(infra::psql_in(database, sql)?
        .lines()
        .filter(|line| !line.is_empty())
        .map(|line| line.split('|').map(str::to_owned).collect())
        .collect())
}

/// The `fraction` percentile of `values` (NaN when empty).
fn percentile(values: &mut [f64], fraction: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let index = ((values.len() as f64 - 1.0) * fraction).round() as usize;
    values[index.min(values.len() - 1)]
}
