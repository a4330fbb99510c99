//! SIGTERM the notification service (the real binary) while one of its dependencies is unreachable:
//! it exits 0 within its `SHUTDOWN_TIMEOUT` (see `shop_testkit::sigterm_during`).

use shop_testkit::{Outage, sigterm_during};

#[tokio::test]
async fn sigterm_with_broker_unreachable_exits_in_time() {
    shop_testkit::init_tracing();
    let took = sigterm_during(Outage::Broker, env!("CARGO_BIN_EXE_notification-service"), true, &[]).await;
    eprintln!("notification-service stopped in {took:?} with broker unreachable");
}

#[tokio::test]
async fn sigterm_with_postgres_unreachable_exits_in_time() {
    shop_testkit::init_tracing();
    let took = sigterm_during(Outage::Postgres, env!("CARGO_BIN_EXE_notification-service"), true, &[]).await;
    eprintln!("notification-service stopped in {took:?} with postgres unreachable");
}
