//! Payments in two steps against slow and crashing setups: 200 orders at 2 s a charge on a
//! pool of 5 connections with no long transaction; and the real binary SIGKILLed at each
//! step of a charge (after `pending`, during the charge, after the charge and before its
//! record) and of a refund, against [`FakeProvider`], whose ledger outlives the service:
//! every order is charged (and refunded) exactly once at the provider.

use std::{sync::Arc, time::Duration};

use shop_proto::shop::{
    common::v1::Money,
    events::v1::{OrderCancelled, OrderPlaced},
};
use shop_testkit::{FakeProvider, Hang, ServiceProcess, TestDb, eventually};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    charges::publish,
    reads::{App, spawn_with},
};

fn placed(order: Uuid, card: &str) -> OrderPlaced {
    OrderPlaced {
        order_id: order.to_string(),
        user_id: Uuid::now_v7().to_string(),
        lines: vec![],
        total: Some(Money { amount: 2599, currency: "EUR".into() }),
        card_token: card.into(),
    }
}

/// Payments by status.
async fn statuses(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT status, count(*) FROM payments GROUP BY status ORDER BY status")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

async fn count(pool: &PgPool, status: &str) -> i64 {
    statuses(pool).await.into_iter().find(|(s, _)| s == status).map_or(0, |(_, n)| n)
}

/// The outbox's events of `ce_type` (short name), by key.
async fn published(pool: &PgPool, name: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT key FROM outbox WHERE ce_type = $1 ORDER BY key")
        .bind(format!("shop.payment.v1.{name}"))
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_hundred_orders_at_two_seconds_a_charge_complete_on_five_connections_with_short_transactions() {
    let app: App = spawn_with(&[("TEST_PROVIDER_LATENCY", "2s"), ("DATABASE_MAX_CONNECTIONS", "5")]).await;
    let pool = PgPool::connect(app.db.url()).await.unwrap();
    // The longest open transaction of the service's connections, sampled every 20 ms: its
    // age in ms, and what it was doing. (An `idle` session has none open; Postgres may leave
    // `xact_start` set on one that LISTENs, from reading its notifications.) The outbox
    // relay's transaction is left out: it spans a Kafka send (bounded by the producer's 5 s
    // timeout) and is shop-kit's, not the charge path's.
    let longest = Arc::new(std::sync::Mutex::new((0_u64, String::new())));
    let watcher = {
        let (pool, longest, database) = (pool.clone(), Arc::clone(&longest), app.db.name().to_owned());
        tokio::spawn(async move {
            loop {
                let oldest: Option<(f64, String)> = sqlx::query_as(
                    "SELECT extract(epoch FROM clock_timestamp() - xact_start)::float8, \
                         concat_ws(' | ', backend_type, state, query) FROM pg_stat_activity \
                     WHERE datname = $1 AND pid <> pg_backend_pid() AND xact_start IS NOT NULL \
                         AND state <> 'idle' AND query NOT LIKE '%FROM outbox%' \
                         AND query NOT LIKE '%pg_try_advisory_xact_lock%' ORDER BY xact_start LIMIT 1",
                )
                .bind(&database)
                .fetch_optional(&pool)
                .await
                .unwrap_or(None);
                if let Some((age, what)) = oldest {
                    let mut longest = longest.lock().unwrap();
                    if (age * 1000.0) as u64 > longest.0 {
                        *longest = ((age * 1000.0) as u64, what);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let orders: Vec<Uuid> = (0..200).map(|_| Uuid::now_v7()).collect();
    for order in &orders {
        publish(&app.prefix, "OrderPlaced", *order, &placed(*order, "tok_visa")).await;
    }
    eventually("200 payments succeeded", Duration::from_secs(180), || async {
        (count(&pool, "succeeded").await == 200).then_some(())
    })
    .await;
    watcher.abort();
    let (longest, what) = longest.lock().unwrap().clone();
    assert!(longest < 1000, "a transaction stayed open for {longest} ms: {what}");
    assert_eq!(published(&pool, "PaymentSucceeded").await.len(), 200, "one event per order");
}

/// Where the payment service dies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Crash {
    /// The payment is `pending` and the charge has not reached the provider.
    AfterPending,
    /// The provider has taken the money and not answered.
    DuringCharge,
    /// The provider has answered; the outcome is not recorded.
    AfterChargeBeforeRecord,
    /// The provider has given the money back and not answered.
    DuringRefund,
}

const ORDERS: usize = 3;

/// The real binary against `provider`, with a 3 s provider timeout and short database
/// timeouts (so a lease of 3 × 3 + 1 + 3 × 2 + 5 = 21 s).
fn start(db: &TestDb, prefix: &str, provider: &FakeProvider) -> ServiceProcess {
    ServiceProcess::start(
        env!("CARGO_BIN_EXE_payment-service"),
        &[
            ("DATABASE_URL", db.url().to_owned()),
            ("KAFKA_BROKERS", crate::charges::brokers()),
            ("KAFKA_TOPIC_PREFIX", prefix.to_owned()),
            ("KAFKA_CREATE_TOPICS", "true".to_owned()),
            ("PAYMENT_PROVIDER_URL", provider.url()),
            ("PAYMENT_PROVIDER_TIMEOUT", "3s".to_owned()),
            ("DATABASE_ACQUIRE_TIMEOUT", "1s".to_owned()),
            ("DATABASE_STATEMENT_TIMEOUT", "2s".to_owned()),
            ("RUST_LOG", "info".to_owned()),
        ],
    )
}

async fn sigkilled(crash: Crash) {
    shop_testkit::init_tracing();
    let (db, provider) = (TestDb::new().await, FakeProvider::start().await);
    let prefix = format!("t{}.", Uuid::now_v7().simple());
    let kafka = shop_kit::events::KafkaConfig::for_brokers(&crate::charges::brokers());
    let topics = [format!("{prefix}shop.order.v1"), format!("{prefix}shop.payment.v1")];
    shop_kit::events::ensure_topics(&kafka, &[&topics[0], &topics[1]], 3).await.unwrap();
    let mut service = start(&db, &prefix, &provider);
    let pool = PgPool::connect(db.url()).await.unwrap();

    let orders: Vec<Uuid> = (0..ORDERS).map(|_| Uuid::now_v7()).collect();
    match crash {
        Crash::AfterPending => provider.hang(Some(Hang::BeforeEffect)),
        Crash::DuringCharge => provider.hang(Some(Hang::AfterEffect)),
        Crash::AfterChargeBeforeRecord => provider.hang(Some(Hang::AfterEffect)),
        Crash::DuringRefund => {}
    }
    for order in &orders {
        publish(&prefix, "OrderPlaced", *order, &placed(*order, "tok_visa")).await;
    }
    if crash == Crash::DuringRefund {
        eventually("the charges", Duration::from_secs(60), || async {
            (count(&pool, "succeeded").await == ORDERS as i64).then_some(())
        })
        .await;
        provider.hang(Some(Hang::AfterEffect));
        for order in &orders {
            let cancelled = OrderCancelled { order_id: order.to_string(), refund: true, ..Default::default() };
            publish(&prefix, "OrderCancelled", *order, &cancelled).await;
        }
    }
    eventually("every call at the provider", Duration::from_secs(60), || async {
        (provider.in_flight() == ORDERS).then_some(())
    })
    .await;
    let mut locks = None;
    if crash == Crash::AfterChargeBeforeRecord {
        // The worker's claim has committed, so the rows are free: hold them, let the
        // provider answer, and the worker's record waits behind this transaction.
        let mut transaction = pool.begin().await.unwrap();
        sqlx::query("SELECT id FROM payments FOR UPDATE").fetch_all(&mut *transaction).await.unwrap();
        locks = Some(transaction);
        provider.hang(None);
        provider.release();
        eventually("every record waiting on its row", Duration::from_secs(30), || async {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
            )
            .bind(db.name())
            .fetch_one(&pool)
            .await
            .unwrap();
            (waiting == ORDERS as i64).then_some(())
        })
        .await;
    }
    service.sigkill();
    if let Some(transaction) = locks {
        transaction.rollback().await.unwrap();
    }
    let (waiting, done) =
        if crash == Crash::DuringRefund { ("refund_pending", "refunded") } else { ("pending", "succeeded") };
    assert_eq!(count(&pool, waiting).await, ORDERS as i64, "{crash:?}: nothing recorded before the kill");
    provider.hang(None);

    let restarted = start(&db, &prefix, &provider);
    eventually("every outcome recorded after the lease", Duration::from_secs(90), || async {
        (count(&pool, done).await == ORDERS as i64).then_some(())
    })
    .await;
    let payments: Vec<Uuid> = sqlx::query_scalar("SELECT id FROM payments ORDER BY id").fetch_all(&pool).await.unwrap();
    assert_eq!(payments.len(), ORDERS, "one payment per order");
    let operations = provider.operations();
    let charges: Vec<&str> =
        operations.iter().filter(|op| op.kind == "charge").map(|op| op.idempotency_key.as_str()).collect();
    let mut keys: Vec<String> = payments.iter().map(Uuid::to_string).collect();
    keys.sort();
    let mut charged: Vec<String> = charges.iter().map(|key| (*key).to_owned()).collect();
    charged.sort();
    assert_eq!(charged, keys, "{crash:?}: each payment charged exactly once, under its own id");
    assert!(operations.iter().all(|op| op.amount == 2599 && op.currency == "EUR"));
    for payment in &payments {
        let key = payment.to_string();
        let (charge_calls, lookups) = (provider.requests(&key, "charge"), provider.requests(&key, "lookup"));
        match crash {
            // The first call never took effect: looked up, found nothing, charged.
            Crash::AfterPending => assert_eq!((charge_calls, lookups.min(1)), (2, 1), "{crash:?}"),
            // The charge had taken effect: looked up and recorded, not charged again.
            Crash::DuringCharge | Crash::AfterChargeBeforeRecord => {
                assert_eq!((charge_calls, lookups.min(1)), (1, 1), "{crash:?}")
            }
            Crash::DuringRefund => {
                let refund = format!("{key}-refund");
                let (refund_calls, lookups) =
                    (provider.requests(&refund, "refund"), provider.requests(&refund, "lookup"));
                assert_eq!((charge_calls, refund_calls, lookups.min(1)), (1, 1, 1), "{crash:?}");
            }
        }
    }
    let refunds = operations.iter().filter(|op| op.kind == "refund").count();
    let mut expected: Vec<String> = orders.iter().map(Uuid::to_string).collect();
    expected.sort();
    assert_eq!(published(&pool, "PaymentSucceeded").await, expected, "{crash:?}: one outcome event per order");
    if crash == Crash::DuringRefund {
        assert_eq!(refunds, ORDERS, "each refunded exactly once");
        assert_eq!(published(&pool, "PaymentRefunded").await, expected);
    } else {
        assert_eq!(refunds, 0);
    }
    drop(restarted);
}

#[tokio::test]
async fn sigkilled_after_pending_charges_once() {
    sigkilled(Crash::AfterPending).await;
}

#[tokio::test]
async fn sigkilled_during_the_charge_looks_it_up_instead_of_charging_again() {
    sigkilled(Crash::DuringCharge).await;
}

#[tokio::test]
async fn sigkilled_after_the_charge_before_its_record_looks_it_up_instead_of_charging_again() {
    sigkilled(Crash::AfterChargeBeforeRecord).await;
}

#[tokio::test]
async fn sigkilled_during_a_refund_refunds_once() {
    sigkilled(Crash::DuringRefund).await;
}

/// Every write of the worker checks that its claim still holds: a worker whose lease ran out
/// while it was busy (a slow provider, a slow database) writes nothing, not even a retry
/// time, and the claim that took the payment over records the outcome. The refund's claims
/// likewise; a refund the provider refuses for good ends `refund_failed`.
#[tokio::test]
async fn a_worker_whose_lease_ran_out_writes_nothing() {
    use payment_service::{
        domain::{NewPayment, PaymentStatus},
        store,
    };
    let db = TestDb::new().await;
    let pool = PgPool::connect(db.url()).await.unwrap();
    payment_service::MIGRATOR.run(&pool).await.unwrap();
    let mut connection = pool.acquire().await.unwrap();
    let payment = NewPayment {
        id: Uuid::now_v7(),
        order_id: Uuid::now_v7(),
        user_id: Uuid::now_v7(),
        amount: 100,
        currency: "EUR".into(),
        card_token: "tok_visa".into(),
    };
    assert!(store::insert_pending(&mut connection, &payment).await.unwrap());
    assert!(
        !store::insert_pending(&mut connection, &NewPayment { id: Uuid::now_v7(), ..payment.clone() }).await.unwrap()
    );
    let status = async |connection: &mut sqlx::PgConnection| -> String {
        sqlx::query_scalar("SELECT status FROM payments").fetch_one(connection).await.unwrap()
    };

    // A lease of zero: the first claim runs out at once and a second takes the payment over.
    let late = store::claim_due(&mut connection, 10, Duration::ZERO).await.unwrap().remove(0);
    let current = store::claim_due(&mut connection, 10, Duration::from_secs(60)).await.unwrap().remove(0);
    assert_eq!((late.claims, current.claims), (1, 2));
    assert!(
        !store::record_charge(&mut connection, &late, PaymentStatus::Failed, Some("processing_error")).await.unwrap()
    );
    store::retry_later(&mut connection, &late, Duration::ZERO).await.unwrap();
    assert!(
        store::claim_due(&mut connection, 10, Duration::from_secs(60)).await.unwrap().is_empty(),
        "the late worker did not shorten the current claim's lease"
    );
    assert_eq!(status(&mut connection).await, "pending");
    assert!(store::record_charge(&mut connection, &current, PaymentStatus::Succeeded, None).await.unwrap());
    assert_eq!(status(&mut connection).await, "succeeded");

    // The refund: asked for, claimed twice, recorded only by the claim that holds it.
    assert_eq!(store::request_refund(&mut connection, payment.order_id).await.unwrap(), Some(PaymentStatus::Succeeded));
    assert_eq!(
        store::request_refund(&mut connection, payment.order_id).await.unwrap(),
        Some(PaymentStatus::RefundPending),
        "asked twice: once"
    );
    let late = store::claim_due(&mut connection, 10, Duration::ZERO).await.unwrap().remove(0);
    let current = store::claim_due(&mut connection, 10, Duration::from_secs(60)).await.unwrap().remove(0);
    assert!(!store::record_refund(&mut connection, &late, None).await.unwrap());
    assert!(store::record_refund(&mut connection, &current, Some("charge_disputed")).await.unwrap());
    assert_eq!(status(&mut connection).await, "refund_failed");
}
