//! A backlog after a broker outage: orders placed while the benchmark's broker is
//! unreachable, then the time from its return until every one is confirmed and notified.

use std::{
    thread,
    time::{Duration, Instant},
};

use super::{
    Context, Figure,
    broker::Broker,
    orders::{db_now, k6_orders, notified_count, outcome_counts},
};
use crate::infra;

/// Orders placed while the broker is down.
const BACKLOG: usize = 10_000;

/// The backlog's figure; `broker` is cut while the orders are placed.
pub(super) fn measure(context: &Context<'_>, broker: &Broker) -> anyhow::Result<Vec<Figure>> {
    let Context { instance, order_db, notification_db, .. } = context;
    eprintln!("xtask: == a {BACKLOG}-order backlog after a broker outage");
    broker.proxy.cut();
    let since = db_now(order_db)?;
    let backlog = k6_orders(instance, &[("COUNT", BACKLOG.to_string()), ("VUS", "16".into())]);
    let restarted = Instant::now();
    broker.proxy.restore();
    let backlog = backlog?;
    let drained = drain_time(order_db, notification_db, &since, restarted, Duration::from_secs(240))?;
    let figure = Figure {
        name: format!("drain a backlog of {BACKLOG} orders placed while the broker was unreachable (from its return)"),
        measured: format!(
            "all confirmed in {:.1} s, all notified in {:.1} s ({} orders, placed at {:.0}/s during the outage)",
            drained.confirmed, drained.notified, drained.orders, backlog.rate
        ),
        baseline: "-".into(),
        ratio: None,
        target: "≤ 30 s".into(),
        met: Some(drained.notified <= 30.0 && drained.orders >= BACKLOG),
    };
    Ok(vec![figure])
}

/// How long the backlog took to drain, s from the broker's return.
struct Drain {
    orders: usize,
    confirmed: f64,
    notified: f64,
}

/// Polls until every order placed since `since` is confirmed and notified; seconds from
/// `restarted` to each (NaN if not within `patience`).
fn drain_time(
    order_db: &str,
    notification_db: &str,
    since: &str,
    restarted: Instant,
    patience: Duration,
) -> anyhow::Result<Drain> {
    let total: usize =
        infra::psql_in(order_db, &format!("SELECT count(*) FROM orders WHERE created_at >= '{since}'"))?.parse()?;
    let mut confirmed_after = f64::NAN;
    loop {
        let (pending, confirmed) = outcome_counts(order_db, since)?;
        if pending == 0 && confirmed_after.is_nan() {
            confirmed_after = restarted.elapsed().as_secs_f64();
        }
        if pending == 0 && notified_count(notification_db, since)? >= confirmed {
            return Ok(Drain {
                orders: total,
                confirmed: confirmed_after,
                notified: restarted.elapsed().as_secs_f64(),
            });
        }
        if restarted.elapsed() > patience {
            return Ok(Drain { orders: total, confirmed: confirmed_after, notified: f64::NAN });
        }
        thread::sleep(Duration::from_millis(100));
    }
}
