//! SIGTERM the user service (the real binary) while one of its dependencies is unreachable:
//! it exits 0 within its `SHUTDOWN_TIMEOUT` (see `shop_testkit::sigterm_during`).

use shop_testkit::{Outage, sigterm_during};

#[tokio::test]
async fn sigterm_with_broker_unreachable_exits_in_time() {
    shop_testkit::init_tracing();
    let took = sigterm_during(
        Outage::Broker,
        env!("CARGO_BIN_EXE_user-service"),
        true,
        &[("SHOP_DEV_MODE", "true".to_owned())],
    )
    .await;
    eprintln!("user-service stopped in {took:?} with broker unreachable");
}

#[tokio::test]
async fn sigterm_with_postgres_unreachable_exits_in_time() {
    shop_testkit::init_tracing();
    let took = sigterm_during(
        Outage::Postgres,
        env!("CARGO_BIN_EXE_user-service"),
        true,
        &[("SHOP_DEV_MODE", "true".to_owned())],
    )
    .await;
    eprintln!("user-service stopped in {took:?} with postgres unreachable");
}

#[tokio::test]
async fn sigterm_with_redis_unreachable_exits_in_time() {
    shop_testkit::init_tracing();
    let took = sigterm_during(
        Outage::Redis,
        env!("CARGO_BIN_EXE_user-service"),
        true,
        &[("SHOP_DEV_MODE", "true".to_owned())],
    )
    .await;
    eprintln!("user-service stopped in {took:?} with redis unreachable");
}
