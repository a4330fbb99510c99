//! What must hold once the platform has recovered, read with SQL from the services' own
//! databases on the private cluster, and the counts the run prints.
//!
//! The invariants, each by the name a failure reports:
//!
//! - `settled`: no order is `pending_payment`; no payment is still in flight (any status
//!   other than `succeeded`, `failed`, `refunded`, such as `pending` or `refund_pending`);
//!   no notification is `pending`; every outbox is drained (no unpublished row); no stock is
//!   reserved (a checkout killed between its reservation and its order leaves a hold that
//!   the product service's sweeper releases after `RESERVATION_TTL`, 45 s in the run).
//! - `acknowledged orders kept`: every order answered 201 exists.
//! - `customer cancellations kept`: every order whose cancellation was answered 200 is
//!   `cancelled`.
//! - `one payment per order`: no order has two payment rows, and no payment names an
//!   order that does not exist.
//! - `charged once`: each confirmed (or shipped, delivered) order has exactly one payment,
//!   `succeeded`, and exactly one `PaymentSucceeded` event; no order has more than one charge
//!   outcome (`PaymentSucceeded` + `PaymentFailed` events) and each payment row has exactly one.
//! - `refunded once`: no cancelled order keeps a `succeeded` payment; each `refunded` payment
//!   belongs to a cancelled order and has exactly one `PaymentRefunded` event; no other
//!   payment has one.
//! - `notified once per kind`: per order, `order_confirmed` notifications = `OrderConfirmed`
//!   events (one for each order that was ever confirmed, so 1 for confirmed ones, 0 or 1
//!   for cancelled ones); `order_cancelled` = 1 for cancelled orders and 0 otherwise;
//!   `payment_refunded` = 1 for refunded payments and 0 otherwise.
//! - `stock balances`: for each product, with `sold` = the units in the lines of confirmed
//!   (shipped, delivered) orders: `on_hand + sold = on_hand before the load`,
//!   `reserved = 0` (nothing is pending), the `held` reservations add up to 0 and the
//!   `committed` ones to `sold`.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Context as _;

use crate::infra;

/// The databases of the instance, by URL.
pub(super) struct Databases {
    pub(super) order: String,
    pub(super) payment: String,
    pub(super) notification: String,
    pub(super) product: String,
    pub(super) user: String,
}

/// Each product's units on hand.
pub(super) fn stock(product: &str) -> anyhow::Result<HashMap<String, i64>> {
    rows(product, "SELECT product_id, on_hand FROM inventory")?
        .into_iter()
        .map(|row| Ok((row[0].clone(), number(&row[1])?)))
        .collect()
}

/// What the databases hold at one moment.
pub(super) struct Snapshot {
    /// Order id → status.
    orders: HashMap<String, String>,
    /// (order id, product id, quantity).
    lines: Vec<(String, String, i64)>,
    /// (order id, event name) → how many the order service published.
    order_events: HashMap<(String, String), i64>,
    /// (order id, status), one per payment row.
    payments: Vec<(String, String)>,
    /// (order id, event name) → how many the payment service published.
    payment_events: HashMap<(String, String), i64>,
    /// (order id, template) → how many notifications; and how many are pending.
    notifications: HashMap<(String, String), i64>,
    pending_notifications: i64,
    /// Product id → (on hand, reserved).
    inventory: HashMap<String, (i64, i64)>,
    /// (product id, status) → units.
    reservations: HashMap<(String, String), i64>,
    /// Database → unpublished outbox rows.
    unpublished: BTreeMap<&'static str, i64>,
}

impl Snapshot {
    pub(super) fn read(databases: &Databases) -> anyhow::Result<Self> {
        let orders = rows(&databases.order, "SELECT id, status FROM orders")?
            .into_iter()
            .map(|row| (row[0].clone(), row[1].clone()))
            .collect();
        let lines = rows(&databases.order, "SELECT order_id, product_id, quantity FROM order_items")?
            .into_iter()
            .map(|row| Ok((row[0].clone(), row[1].clone(), number(&row[2])?)))
            .collect::<anyhow::Result<_>>()?;
        let payments = rows(&databases.payment, "SELECT order_id, status FROM payments")?
            .into_iter()
            .map(|row| (row[0].clone(), row[1].clone()))
            .collect();
        let notifications = counts(
            &databases.notification,
            "SELECT order_id, template, count(*) FROM notifications WHERE order_id IS NOT NULL GROUP BY 1, 2",
        )?;
        let pending_notifications = number(&infra::psql_at(
            &databases.notification,
            "SELECT count(*) FROM notifications WHERE status = 'pending'",
        )?)?;
        let inventory = rows(&databases.product, "SELECT product_id, on_hand, reserved FROM inventory")?
            .into_iter()
            .map(|row| Ok((row[0].clone(), (number(&row[1])?, number(&row[2])?))))
            .collect::<anyhow::Result<_>>()?;
        let reservations =
            counts(&databases.product, "SELECT product_id, status, sum(quantity) FROM reservations GROUP BY 1, 2")?;
        let mut unpublished = BTreeMap::new();
        for (name, url) in [
            ("user", &databases.user),
            ("product", &databases.product),
            ("order", &databases.order),
            ("payment", &databases.payment),
            ("notification", &databases.notification),
        ] {
            let count = number(&infra::psql_at(url, "SELECT count(*) FROM outbox WHERE published_at IS NULL")?)?;
            unpublished.insert(name, count);
        }
        Ok(Self {
            orders,
            lines,
            order_events: events(&databases.order)?,
            payments,
            payment_events: events(&databases.payment)?,
            notifications,
            pending_notifications,
            inventory,
            reservations,
            unpublished,
        })
    }

    /// Whether the platform is at rest: nothing pending anywhere (the `settled` invariant).
    pub(super) fn is_quiet(&self) -> bool {
        self.settled().is_none()
    }

    fn settled(&self) -> Option<String> {
        let pending_orders = self.orders.values().filter(|status| *status == "pending_payment").count();
        let in_flight = self.payments.iter().filter(|(_, status)| !FINAL_PAYMENT.contains(&status.as_str())).count();
        let unpublished: i64 = self.unpublished.values().sum();
        let reserved: i64 = self.inventory.values().map(|(_, reserved)| reserved).sum();
        if pending_orders == 0 && in_flight == 0 && self.pending_notifications == 0 && unpublished == 0 && reserved == 0
        {
            return None;
        }
        Some(format!(
            "{pending_orders} orders pending_payment, {in_flight} payments in flight, {} notifications pending, \
             unpublished outbox rows {:?}, {reserved} units reserved",
            self.pending_notifications, self.unpublished
        ))
    }

    /// Every invariant that does not hold, by name, with a count and a few examples.
    pub(super) fn violations(
        &self,
        acknowledged: &[String],
        cancelled_by_customers: &[String],
        stock_before: &HashMap<String, i64>,
    ) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        if let Some(detail) = self.settled() {
            found.push(("settled", detail));
        }
        let lost: Vec<&String> = acknowledged.iter().filter(|id| !self.orders.contains_key(*id)).collect();
        report(&mut found, "acknowledged orders kept", "orders answered 201 do not exist", &lost);
        let not_cancelled: Vec<String> = cancelled_by_customers
            .iter()
            .filter(|id| self.orders.get(*id).is_none_or(|status| status != "cancelled"))
            .map(|id| format!("{id} ({})", self.orders.get(id).map_or("missing", String::as_str)))
            .collect();
        report(
            &mut found,
            "customer cancellations kept",
            "orders cancelled with 200 are not cancelled",
            &not_cancelled,
        );
        self.check_payments(&mut found);
        self.check_notifications(&mut found);
        self.check_stock(&mut found, stock_before);
        found
    }

    fn payments_by_order(&self) -> HashMap<&str, Vec<&str>> {
        let mut by_order: HashMap<&str, Vec<&str>> = HashMap::new();
        for (order, status) in &self.payments {
            by_order.entry(order.as_str()).or_default().push(status.as_str());
        }
        by_order
    }

    fn check_payments(&self, found: &mut Vec<(&'static str, String)>) {
        let by_order = self.payments_by_order();
        let payment_event = |order: &str, name: &str| {
            self.payment_events.get(&(order.to_owned(), name.to_owned())).copied().unwrap_or(0)
        };
        let twice: Vec<String> = by_order
            .iter()
            .filter(|(_, statuses)| statuses.len() > 1)
            .map(|(order, statuses)| format!("{order} {statuses:?}"))
            .collect();
        report(found, "one payment per order", "orders have more than one payment", &twice);
        let unknown: Vec<&&str> = by_order.keys().filter(|order| !self.orders.contains_key(**order)).collect();
        report(found, "one payment per order", "payments name an order that does not exist", &unknown);

        let mut uncharged = Vec::new();
        let mut outcomes = Vec::new();
        let mut kept = Vec::new();
        let mut refunds = Vec::new();
        for (order, status) in &self.orders {
            let payments = by_order.get(order.as_str()).cloned().unwrap_or_default();
            let succeeded = payment_event(order, "PaymentSucceeded");
            let charged = succeeded + payment_event(order, "PaymentFailed");
            if CONFIRMED.contains(&status.as_str()) && (payments != ["succeeded"] || succeeded != 1) {
                uncharged.push(format!("{order} {status}: payments {payments:?}, {succeeded} PaymentSucceeded"));
            }
            if charged != i64::try_from(payments.len()).unwrap_or(i64::MAX) || charged > 1 {
                outcomes.push(format!("{order}: {} payment rows, {charged} charge outcome events", payments.len()));
            }
            if status == "cancelled" && payments.contains(&"succeeded") {
                kept.push(format!("{order}: cancelled, payment succeeded and not refunded"));
            }
            let refunded_rows = payments.iter().filter(|status| **status == "refunded").count();
            let refund_events = payment_event(order, "PaymentRefunded");
            let expected_refunds = i64::from(refunded_rows > 0);
            if refund_events != expected_refunds || (refunded_rows > 0 && status != "cancelled") {
                refunds.push(format!(
                    "{order} {status}: {refunded_rows} refunded payments, {refund_events} PaymentRefunded"
                ));
            }
        }
        report(found, "charged once", "confirmed orders without exactly one succeeded payment", &uncharged);
        report(found, "charged once", "orders whose charge outcomes do not match their payment rows", &outcomes);
        report(found, "refunded once", "cancelled orders keep a succeeded payment", &kept);
        report(found, "refunded once", "refunds not exactly once, or of an order not cancelled", &refunds);
    }

    fn check_notifications(&self, found: &mut Vec<(&'static str, String)>) {
        let by_order = self.payments_by_order();
        let notified = |order: &str, template: &str| {
            self.notifications.get(&(order.to_owned(), template.to_owned())).copied().unwrap_or(0)
        };
        let mut wrong = Vec::new();
        for (order, status) in &self.orders {
            let confirmed_events =
                self.order_events.get(&(order.clone(), "OrderConfirmed".to_owned())).copied().unwrap_or(0);
            let refunded = by_order.get(order.as_str()).is_some_and(|payments| payments.contains(&"refunded"));
            let expected = [
                ("order_confirmed", if CONFIRMED.contains(&status.as_str()) { 1 } else { confirmed_events.min(1) }),
                ("order_cancelled", i64::from(status == "cancelled")),
                ("payment_refunded", i64::from(refunded)),
            ];
            for (template, want) in expected {
                let got = notified(order, template);
                if got != want || (template == "order_confirmed" && confirmed_events != want) {
                    wrong.push(format!(
                        "{order} {status}: {got} {template} (want {want}; {confirmed_events} OrderConfirmed)"
                    ));
                }
            }
        }
        report(found, "notified once per kind", "orders with a missing or extra notification", &wrong);
    }

    fn check_stock(&self, found: &mut Vec<(&'static str, String)>, stock_before: &HashMap<String, i64>) {
        let mut sold: HashMap<&str, i64> = HashMap::new();
        for (order, product, quantity) in &self.lines {
            if self.orders.get(order).is_some_and(|status| CONFIRMED.contains(&status.as_str())) {
                *sold.entry(product.as_str()).or_default() += quantity;
            }
        }
        let reserved = |product: &str, status: &str| {
            self.reservations.get(&(product.to_owned(), status.to_owned())).copied().unwrap_or(0)
        };
        let mut wrong = Vec::new();
        let products: HashSet<&String> = stock_before.keys().chain(self.inventory.keys()).collect();
        for product in products {
            let before = stock_before.get(product).copied().unwrap_or(0);
            let (on_hand, reserved_now) = self.inventory.get(product).copied().unwrap_or((0, 0));
            let sold = sold.get(product.as_str()).copied().unwrap_or(0);
            let held = reserved(product, "held");
            let committed = reserved(product, "committed");
            if on_hand + sold != before || reserved_now != 0 || held != 0 || committed != sold {
                wrong.push(format!(
                    "{product}: on hand {on_hand} + sold {sold} vs {before} before; reserved {reserved_now}; \
                     held {held}; committed {committed}"
                ));
            }
        }
        report(found, "stock balances", "products whose stock does not balance", &wrong);
    }

    /// The counts the run prints: orders by status, payments by status, notifications by
    /// template, units sold.
    pub(super) fn counts(&self) -> Vec<(String, i64)> {
        let mut counts = vec![("orders placed".to_owned(), len(self.orders.len()))];
        let mut by_status: BTreeMap<&str, i64> = BTreeMap::new();
        for status in self.orders.values() {
            *by_status.entry(status).or_default() += 1;
        }
        counts.extend(by_status.into_iter().map(|(status, count)| (format!("  {status}"), count)));
        let by_order = self.payments_by_order();
        let cancelled_refunded = self
            .orders
            .iter()
            .filter(|(order, status)| {
                *status == "cancelled" && by_order.get(order.as_str()).is_some_and(|p| p.contains(&"refunded"))
            })
            .count();
        counts.push(("  cancelled after payment, refunded".to_owned(), len(cancelled_refunded)));
        counts.push(("payments".to_owned(), len(self.payments.len())));
        let mut by_status: BTreeMap<&str, i64> = BTreeMap::new();
        for (_, status) in &self.payments {
            *by_status.entry(status).or_default() += 1;
        }
        counts.extend(by_status.into_iter().map(|(status, count)| (format!("  {status}"), count)));
        let mut by_template: BTreeMap<&str, i64> = BTreeMap::new();
        for ((_, template), count) in &self.notifications {
            *by_template.entry(template).or_default() += count;
        }
        counts.push(("notifications (of orders)".to_owned(), by_template.values().sum()));
        counts.extend(by_template.into_iter().map(|(template, count)| (format!("  {template}"), count)));
        let sold: i64 = self
            .lines
            .iter()
            .filter(|(order, _, _)| self.orders.get(order).is_some_and(|status| CONFIRMED.contains(&status.as_str())))
            .map(|(_, _, quantity)| quantity)
            .sum();
        counts.push(("units sold".to_owned(), sold));
        counts
    }
}

/// The statuses of an order that was confirmed and stays so.
const CONFIRMED: [&str; 3] = ["confirmed", "shipped", "delivered"];
/// The statuses a payment ends in.
const FINAL_PAYMENT: [&str; 3] = ["succeeded", "failed", "refunded"];

fn len(count: usize) -> i64 {
    i64::try_from(count).unwrap_or(i64::MAX)
}

/// Adds a violation of `invariant` when `examples` is not empty: how many, and the first few.
fn report(
    found: &mut Vec<(&'static str, String)>,
    invariant: &'static str,
    what: &str,
    examples: &[impl std::fmt::Display],
) {
    if examples.is_empty() {
        return;
    }
    let first: Vec<String> = examples.iter().take(3).map(ToString::to_string).collect();
    found.push((invariant, format!("{} {what}, e.g. {}", examples.len(), first.join("; "))));
}

/// The rows of `sql` on the database at `url`, each split into its columns; fails unless
/// each has as many columns as the statement selects, so they may be indexed.
fn rows(url: &str, sql: &str) -> anyhow::Result<Vec<Vec<String>>> {
    let columns = sql.split(" FROM ").next().unwrap_or_default().matches(',').count() + 1;
    let text = infra::psql_at(url, sql)?;
    let rows: Vec<Vec<String>> =
        text.lines().filter(|line| !line.is_empty()).map(|line| line.split('|').map(str::to_owned).collect()).collect();
    if let Some(row) = rows.iter().find(|row| row.len() != columns) {
        anyhow::bail!("{sql}: a row of {} columns, not {columns}: {row:?}", row.len());
    }
    Ok(rows)
}

/// Rows of (a, b, count) as a map.
fn counts(url: &str, sql: &str) -> anyhow::Result<HashMap<(String, String), i64>> {
    rows(url, sql)?.into_iter().map(|row| Ok(((row[0].clone(), row[1].clone()), number(&row[2])?))).collect()
}

/// How many of each event (by its name, the last part of its type) each order's outbox holds.
fn events(url: &str) -> anyhow::Result<HashMap<(String, String), i64>> {
    let rows = counts(url, "SELECT key, ce_type, count(*) FROM outbox GROUP BY 1, 2")?;
    Ok(rows
        .into_iter()
        .map(|((key, ce_type), count)| ((key, ce_type.rsplit('.').next().unwrap_or_default().to_owned()), count))
        .collect())
}

fn number(text: &str) -> anyhow::Result<i64> {
    text.trim().parse().with_context(|| format!("not a number: {text:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(a: &str, b: &str) -> (String, String) {
        (a.to_owned(), b.to_owned())
    }

    /// A platform at rest after three orders: `a` confirmed, `b` cancelled after payment
    /// (refunded), `c` declined; two units of product `p` sold out of 10.
    fn at_rest() -> Snapshot {
        let orders = [("a", "confirmed"), ("b", "cancelled"), ("c", "cancelled")];
        let notifications = [
            ("a", "order_confirmed"),
            ("b", "order_confirmed"),
            ("b", "order_cancelled"),
            ("b", "payment_refunded"),
            ("c", "order_cancelled"),
        ];
        Snapshot {
            orders: orders.iter().map(|(id, status)| pair(id, status)).collect(),
            lines: vec![("a".into(), "p".into(), 2), ("b".into(), "p".into(), 1), ("c".into(), "p".into(), 4)],
            order_events: [(pair("a", "OrderConfirmed"), 1), (pair("b", "OrderConfirmed"), 1)].into_iter().collect(),
            payments: vec![pair("a", "succeeded"), pair("b", "refunded"), pair("c", "failed")],
            payment_events: [
                (pair("a", "PaymentSucceeded"), 1),
                (pair("b", "PaymentSucceeded"), 1),
                (pair("b", "PaymentRefunded"), 1),
                (pair("c", "PaymentFailed"), 1),
            ]
            .into_iter()
            .collect(),
            notifications: notifications.iter().map(|(order, template)| (pair(order, template), 1)).collect(),
            pending_notifications: 0,
            inventory: [("p".to_owned(), (8, 0))].into_iter().collect(),
            reservations: [(pair("p", "committed"), 2), (pair("p", "returned"), 1), (pair("p", "released"), 4)]
                .into_iter()
                .collect(),
            unpublished: [("order", 0)].into_iter().collect(),
        }
    }

    fn broken(snapshot: &Snapshot) -> Vec<&'static str> {
        let stock = [("p".to_owned(), 10)].into_iter().collect();
        let acknowledged = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        snapshot.violations(&acknowledged, &["b".to_owned()], &stock).into_iter().map(|(name, _)| name).collect()
    }

    #[test]
    fn a_consistent_platform_violates_nothing() {
        assert_eq!(broken(&at_rest()), Vec::<&str>::new());
        assert!(at_rest().is_quiet());
    }

    #[test]
    fn each_invariant_catches_a_deliberate_break() {
        type Break = fn(&mut Snapshot);
        let cases: [(&str, Break, &str); 12] = [
            (
                "an order left pending",
                |s| {
                    let _ = s.orders.insert("a".into(), "pending_payment".into());
                },
                "settled",
            ),
            ("a payment in flight", |s| s.payments[1].1 = "refund_pending".into(), "settled"),
            (
                "an unpublished event",
                |s| {
                    let _ = s.unpublished.insert("payment", 1);
                },
                "settled",
            ),
            (
                "an acknowledged order lost",
                |s| {
                    let _ = s.orders.remove("c");
                },
                "acknowledged orders kept",
            ),
            (
                "a cancellation undone",
                |s| {
                    let _ = s.orders.insert("b".into(), "confirmed".into());
                },
                "customer cancellations kept",
            ),
            ("two payments", |s| s.payments.push(pair("a", "succeeded")), "one payment per order"),
            (
                "charged twice",
                |s| {
                    let _ = s.payment_events.insert(pair("a", "PaymentSucceeded"), 2);
                },
                "charged once",
            ),
            ("money kept", |s| s.payments[1].1 = "succeeded".into(), "refunded once"),
            (
                "refunded twice",
                |s| {
                    let _ = s.payment_events.insert(pair("b", "PaymentRefunded"), 2);
                },
                "refunded once",
            ),
            (
                "no confirmation sent",
                |s| {
                    let _ = s.notifications.remove(&pair("a", "order_confirmed"));
                },
                "notified once per kind",
            ),
            (
                "a refund not told",
                |s| {
                    let _ = s.notifications.remove(&pair("b", "payment_refunded"));
                },
                "notified once per kind",
            ),
            (
                "a unit lost",
                |s| {
                    let _ = s.inventory.insert("p".into(), (7, 0));
                },
                "stock balances",
            ),
        ];
        for (case, break_it, invariant) in cases {
            let mut snapshot = at_rest();
            break_it(&mut snapshot);
            assert!(broken(&snapshot).contains(&invariant), "{case}: {:?}", broken(&snapshot));
        }
    }
}
