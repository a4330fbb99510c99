use std::time::Duration;

use serde_json::Value;
use shop_proto::shop::product::v1::{
    BatchGetProductsRequest, GetProductRequest, ReleaseStockRequest, ReserveStockRequest, StockLine,
};
use tonic::Code;
use uuid::Uuid;

use crate::helpers::{as_checkout, authorized, spawn_app, spawn_with};

fn line(product: &Value, quantity: i64) -> StockLine {
    StockLine { product_id: product["id"].as_str().unwrap().to_owned(), quantity }
}

fn reserve(order_id: Uuid, items: Vec<StockLine>, token: &str) -> tonic::Request<ReserveStockRequest> {
    as_checkout(ReserveStockRequest { order_id: order_id.to_string(), items }, token)
}

async fn available(app: &crate::helpers::TestApp, product: &Value) -> i64 {
    let read: Value = app.get(&format!("/v1/products/{}", product["id"].as_str().unwrap())).await.json().await.unwrap();
    read["stock_available"].as_i64().unwrap()
}

async fn assert_balanced(app: &crate::helpers::TestApp) {
    let pool = app.pool().await;
    let bad: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM inventory i WHERE i.reserved <> COALESCE((SELECT sum(quantity) FROM reservations r \
         WHERE r.product_id = i.product_id AND r.status = 'held'), 0) OR i.on_hand < i.reserved OR i.reserved < 0",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(bad, 0, "reserved must equal the held reservations, and never exceed on hand");
}

#[tokio::test]
async fn a_race_for_the_last_units_never_oversells() {
    let app = spawn_app().await;
    let product = app.create("LAST-5", "Scarce", "", 5).await;
    let buyer = app.issuer.service_token("order", "product");
    let client = app.grpc().await;
    let attempts = (0..25).map(|_| {
        let mut client = client.clone();
        let request = reserve(Uuid::now_v7(), vec![line(&product, 1)], &buyer);
        async move { client.reserve_stock(request).await }
    });
    let results = futures::future::join_all(attempts).await;
    let won = results.iter().filter(|result| result.is_ok()).count();
    assert_eq!(won, 5, "exactly the five units can be held");
    for result in results.iter().filter_map(|result| result.as_ref().err()) {
        assert_eq!(result.code(), Code::FailedPrecondition);
        assert_eq!(result.metadata().get("shop-error-code").unwrap(), "out_of_stock");
    }
    assert_eq!(available(&app, &product).await, 0);
    assert_balanced(&app).await;
}

#[tokio::test]
async fn reservations_are_all_or_nothing_and_idempotent_by_order() {
    let app = spawn_app().await;
    let plenty = app.create("PLENTY", "Plenty", "", 10).await;
    let scarce = app.create("SCARCE", "Scarce", "", 1).await;
    let buyer = app.issuer.service_token("order", "product");
    let mut client = app.grpc().await;

    let short_order = Uuid::now_v7();
    let short =
        client.reserve_stock(reserve(short_order, vec![line(&plenty, 3), line(&scarce, 2)], &buyer)).await.unwrap_err();
    assert_eq!(short.code(), Code::FailedPrecondition);
    assert_eq!(available(&app, &plenty).await, 10, "nothing held when any line is short");

    let order = Uuid::now_v7();
    let first = client
        .reserve_stock(reserve(order, vec![line(&plenty, 2), line(&plenty, 1), line(&scarce, 1)], &buyer))
        .await
        .unwrap();
    let retry = client
        .reserve_stock(reserve(order, vec![line(&plenty, 2), line(&plenty, 1), line(&scarce, 1)], &buyer))
        .await
        .unwrap();
    assert_eq!(first.get_ref().expires_at, retry.get_ref().expires_at, "a retry gets the first answer");
    assert_eq!(available(&app, &plenty).await, 7, "duplicate lines add up, and the retry held nothing more");
    assert_eq!(available(&app, &scarce).await, 0);

    // The refused order stays refused even after a restock: its first answer stands.
    app.send(
        reqwest::Method::PUT,
        &format!("/v1/products/{}/stock", scarce["id"].as_str().unwrap()),
        Some(&app.admin),
        Some(&serde_json::json!({"on_hand": 5})),
    )
    .await;
    let again =
        client.reserve_stock(reserve(short_order, vec![line(&plenty, 3), line(&scarce, 2)], &buyer)).await.unwrap_err();
    assert_eq!(again.code(), Code::FailedPrecondition);

    // Stock cannot be set below what is held.
    let below = app
        .send(
            reqwest::Method::PUT,
            &format!("/v1/products/{}/stock", plenty["id"].as_str().unwrap()),
            Some(&app.admin),
            Some(&serde_json::json!({"on_hand": 2})),
        )
        .await;
    assert_eq!(below.status(), 409);

    let (_, stranger) = app.issuer.customer();
    let denied = client
        .release_stock(authorized(ReleaseStockRequest { order_id: order.to_string() }, &stranger))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let released =
        client.release_stock(authorized(ReleaseStockRequest { order_id: order.to_string() }, &buyer)).await.unwrap();
    assert_eq!(released.get_ref().released_units, 4);
    let twice =
        client.release_stock(authorized(ReleaseStockRequest { order_id: order.to_string() }, &buyer)).await.unwrap();
    assert_eq!(twice.get_ref().released_units, 0, "release is idempotent");
    assert_eq!(available(&app, &plenty).await, 10);
    assert_balanced(&app).await;
}

#[tokio::test]
async fn bad_reservation_requests_are_refused_clearly() {
    let app = spawn_app().await;
    let product = app.create("P-1", "Thing", "", 5).await;
    let buyer = app.issuer.service_token("order", "product");
    let mut client = app.grpc().await;
    let order = Uuid::now_v7().to_string();
    let (_, customer) = app.issuer.customer();
    let cart = app.issuer.service_token("cart", "product");
    let for_cart = app.issuer.service_token("order", "cart");
    let hour_ago = chrono::Utc::now() - chrono::Duration::hours(1);
    let an_hour_ago = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(hour_ago.timestamp()).unwrap(),
        hour_ago.timestamp_subsec_nanos(),
    ));
    let cases: Vec<(&str, tonic::Request<ReserveStockRequest>, Code)> = vec![
        (
            "no token",
            tonic::Request::new(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 1)] }),
            Code::Unauthenticated,
        ),
        (
            "bad token",
            authorized(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 1)] }, "x"),
            Code::Unauthenticated,
        ),
        (
            "bad order id",
            as_checkout(ReserveStockRequest { order_id: "nope".into(), items: vec![line(&product, 1)] }, &buyer),
            Code::InvalidArgument,
        ),
        (
            "no lines",
            as_checkout(ReserveStockRequest { order_id: order.clone(), items: vec![] }, &buyer),
            Code::InvalidArgument,
        ),
        (
            "zero quantity",
            as_checkout(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 0)] }, &buyer),
            Code::InvalidArgument,
        ),
        (
            "negative quantity",
            as_checkout(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, -3)] }, &buyer),
            Code::InvalidArgument,
        ),
        (
            "bad product id",
            as_checkout(
                ReserveStockRequest {
                    order_id: order.clone(),
                    items: vec![StockLine { product_id: "x".into(), quantity: 1 }],
                },
                &buyer,
            ),
            Code::InvalidArgument,
        ),
        (
            "unknown product",
            as_checkout(
                ReserveStockRequest {
                    order_id: Uuid::now_v7().to_string(),
                    items: vec![StockLine { product_id: Uuid::now_v7().to_string(), quantity: 1 }],
                },
                &buyer,
            ),
            Code::FailedPrecondition,
        ),
        (
            "a customer",
            as_checkout(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 1)] }, &customer),
            Code::PermissionDenied,
        ),
        (
            "an admin",
            as_checkout(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 1)] }, &app.admin),
            Code::PermissionDenied,
        ),
        (
            "the cart service",
            as_checkout(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 1)] }, &cart),
            Code::PermissionDenied,
        ),
        (
            "order's token for another callee",
            as_checkout(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 1)] }, &for_cart),
            Code::Unauthenticated,
        ),
        (
            "for no customer",
            authorized(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 1)] }, &buyer),
            Code::InvalidArgument,
        ),
        (
            "an order id from an hour ago",
            as_checkout(
                ReserveStockRequest { order_id: an_hour_ago.to_string(), items: vec![line(&product, 1)] },
                &buyer,
            ),
            Code::InvalidArgument,
        ),
        (
            "a random (v4) order id",
            as_checkout(
                ReserveStockRequest { order_id: Uuid::new_v4().to_string(), items: vec![line(&product, 1)] },
                &buyer,
            ),
            Code::InvalidArgument,
        ),
        (
            "more of a product than a cart line holds",
            as_checkout(ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 100)] }, &buyer),
            Code::InvalidArgument,
        ),
        (
            "lines adding up to more than a cart line holds",
            as_checkout(
                ReserveStockRequest { order_id: order.clone(), items: vec![line(&product, 60), line(&product, 40)] },
                &buyer,
            ),
            Code::InvalidArgument,
        ),
        (
            "more lines than a cart holds",
            as_checkout(
                ReserveStockRequest {
                    order_id: order.clone(),
                    items: (0..101)
                        .map(|_| StockLine { product_id: Uuid::now_v7().to_string(), quantity: 1 })
                        .collect(),
                },
                &buyer,
            ),
            Code::InvalidArgument,
        ),
    ];
    for (case, request, code) in cases {
        let status = client.reserve_stock(request).await.unwrap_err();
        assert_eq!(status.code(), code, "case {case}: {status:?}");
    }
    assert_eq!(available(&app, &product).await, 5);

    // Reads are the cart's and the order's: a customer, an admin, anyone without a token and
    // another service are refused.
    let read_as =
        |token: &str| authorized(GetProductRequest { product_id: product["id"].as_str().unwrap().into() }, token);
    for (who, token, code) in [
        ("a customer", customer.as_str(), Code::PermissionDenied),
        ("an admin", app.admin.as_str(), Code::PermissionDenied),
        ("the payment service", &app.issuer.service_token("payment", "product"), Code::PermissionDenied),
        ("garbage", "x", Code::Unauthenticated),
    ] {
        assert_eq!(client.get_product(read_as(token)).await.unwrap_err().code(), code, "{who}");
    }
    let reader = app.issuer.service_token("cart", "product");
    let read = client.get_product(read_as(&reader)).await.unwrap();
    assert_eq!(read.get_ref().product.as_ref().unwrap().sku, "P-1");
    let missing = client
        .get_product(authorized(GetProductRequest { product_id: Uuid::now_v7().to_string() }, &reader))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    let order_reader = app.issuer.service_token("order", "product");
    let batch = client
        .batch_get_products(authorized(
            BatchGetProductsRequest {
                product_ids: vec![product["id"].as_str().unwrap().into(), Uuid::now_v7().to_string()],
            },
            &order_reader,
        ))
        .await
        .unwrap();
    assert_eq!(batch.get_ref().products.len(), 1, "unknown ids are left out");
    let too_many = (0..101).map(|_| Uuid::now_v7().to_string()).collect();
    assert_eq!(
        client
            .batch_get_products(authorized(BatchGetProductsRequest { product_ids: too_many }, &order_reader))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let garbage = BatchGetProductsRequest { product_ids: vec!["garbage".into()] };
    assert_eq!(
        client.batch_get_products(authorized(garbage, &order_reader)).await.unwrap_err().code(),
        Code::InvalidArgument
    );
}

#[tokio::test]
async fn unconfirmed_reservations_expire() {
    let app = spawn_with(|vars| vars.with("RESERVATION_TTL", "1s").with("RESERVATION_SWEEP_INTERVAL", "100ms")).await;
    let product = app.create("EXP-1", "Fleeting", "", 3).await;
    let buyer = app.issuer.service_token("order", "product");
    let mut client = app.grpc().await;
    let order = Uuid::now_v7();
    let customer = Uuid::now_v7();
    let request =
        authorized(ReserveStockRequest { order_id: order.to_string(), items: vec![line(&product, 3)] }, &buyer);
    client.reserve_stock(shop_kit::grpc::acting_for(request, customer)).await.unwrap();
    assert_eq!(available(&app, &product).await, 0);
    let owner: Uuid = sqlx::query_scalar("SELECT owner_id FROM reservation_requests WHERE order_id = $1")
        .bind(order)
        .fetch_one(&app.pool().await)
        .await
        .unwrap();
    assert_eq!(owner, customer, "the hold records the customer the checkout acted for");
    shop_testkit::eventually("the hold to lapse", Duration::from_secs(10), || async {
        (available(&app, &product).await == 3).then_some(())
    })
    .await;
    let status: String = sqlx::query_scalar("SELECT status FROM reservations WHERE order_id = $1")
        .bind(order)
        .fetch_one(&app.pool().await)
        .await
        .unwrap();
    assert_eq!(status, "expired");
    assert_balanced(&app).await;
}

/// The retention job deletes finished reservation requests (released, rejected) past their
/// age, and keeps those still held or committed (a refund returns committed units).
#[tokio::test]
async fn finished_reservation_requests_are_pruned_and_live_ones_kept() {
    let app = spawn_with(|vars| vars.with("RETENTION_INTERVAL", "200ms").with("RESERVATION_RETENTION", "1h")).await;
    let product = app.create("RET-1", "Kept", "", 5).await;
    let buyer = app.issuer.service_token("order", "product");
    let mut client = app.grpc().await;
    let (held, committed, released, rejected) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for order in [held, committed, released] {
        client.reserve_stock(reserve(order, vec![line(&product, 1)], &buyer)).await.unwrap();
    }
    client.reserve_stock(reserve(rejected, vec![line(&product, 50)], &buyer)).await.unwrap_err();
    client.release_stock(authorized(ReleaseStockRequest { order_id: released.to_string() }, &buyer)).await.unwrap();
    let pool = app.pool().await;
    // As the order's confirmation would (product's OrderConfirmed handler).
    sqlx::query("UPDATE reservations SET status = 'committed', settled_at = now() WHERE order_id = $1")
        .bind(committed)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE inventory SET on_hand = on_hand - 1, reserved = reserved - 1").execute(&pool).await.unwrap();
    let requests = || async {
        let mut ids: Vec<Uuid> =
            sqlx::query_scalar("SELECT order_id FROM reservation_requests").fetch_all(&pool).await.unwrap();
        ids.sort();
        ids
    };
    // A pass of the retention job has run (it counts what it deleted, 0 included).
    let metrics = || async { app.client.get(app.server.url("/metrics")).send().await.ok()?.text().await.ok() };
    shop_testkit::eventually("a retention pass", Duration::from_secs(10), || async {
        metrics().await.filter(|text| text.contains(r#"retention_deleted_rows_total{table="reservation_requests"} 0"#))
    })
    .await;
    assert_eq!(requests().await.len(), 4, "nothing is old enough yet");

    sqlx::query("UPDATE reservation_requests SET created_at = now() - interval '2 hours'")
        .execute(&pool)
        .await
        .unwrap();
    let mut kept = vec![held, committed];
    kept.sort();
    shop_testkit::eventually("finished requests to be pruned", Duration::from_secs(10), || async {
        (requests().await == kept).then_some(())
    })
    .await;
    assert_eq!(available(&app, &product).await, 3, "the held unit is still held, the committed one sold");
    assert_balanced(&app).await;
    let metrics = app.client.get(app.server.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"retention_deleted_rows_total{table="reservation_requests"} 2"#), "{metrics}");
}
