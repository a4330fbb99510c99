use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};
use shop_proto::shop::cart::v1::{ClearCartRequest, GetCartRequest, cart_service_client::CartServiceClient};
use tonic::Code;

use crate::helpers::{assert_problem, spawn_app, spawn_with};

#[tokio::test]
async fn a_cart_is_priced_from_the_catalog_and_private_to_its_owner() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, "USD");
    let mug = app.product("MUG", 1250, "USD");
    let (_, ada) = app.issuer.customer();
    let (_, bob) = app.issuer.customer();

    let empty = app.view(&ada).await;
    assert_eq!(empty, json!({"items": [], "total": {"amount": 0, "currency": "USD"}}));
    app.set(&ada, &lamp, json!(2)).await;
    let cart: Value = app.set(&ada, &mug, json!(3)).await.json().await.unwrap();
    assert_eq!(cart["total"], json!({"amount": 2 * 2999 + 3 * 1250, "currency": "USD"}));
    let lamp_line = cart["items"].as_array().unwrap().iter().find(|item| item["product_id"] == lamp.as_str()).unwrap();
    assert_eq!(lamp_line["name"], "Product LAMP");
    assert_eq!(lamp_line["unit_price"], json!({"amount": 2999, "currency": "USD"}));
    assert_eq!(lamp_line["line_total"], json!({"amount": 5998, "currency": "USD"}));

    // Setting again replaces the quantity.
    let cart: Value = app.set(&ada, &lamp, json!(1)).await.json().await.unwrap();
    assert_eq!(cart["total"]["amount"], 2999 + 3 * 1250);
    assert!(app.view(&bob).await["items"].as_array().unwrap().is_empty(), "another user's cart is separate");

    let cart: Value =
        app.cart(Method::DELETE, &format!("/v1/cart/items/{mug}"), Some(&ada), None).await.json().await.unwrap();
    assert_eq!(cart["items"].as_array().unwrap().len(), 1);
    assert_eq!(app.cart(Method::DELETE, "/v1/cart", Some(&ada), None).await.status(), 204);
    assert!(app.view(&ada).await["items"].as_array().unwrap().is_empty());

    for (method, path) in [
        (Method::GET, "/v1/cart".to_owned()),
        (Method::DELETE, "/v1/cart".to_owned()),
        (Method::PUT, format!("/v1/cart/items/{lamp}")),
    ] {
        let case = format!("{method} {path} anonymous");
        assert_problem(
            app.cart(method, &path, None, Some(json!({"quantity": 1}))).await,
            401,
            "unauthenticated",
            &case,
        )
        .await;
    }
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_problem() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, "USD");
    let euro = app.product("EURO", 1000, "EUR");
    let hidden = app.product("HIDDEN", 1000, "USD");
    let gone = app.product("GONE", 1000, "USD");
    app.catalog.set_active(&hidden, false);
    app.catalog.remove(&gone);
    let (_, ada) = app.issuer.customer();
    app.set(&ada, &lamp, json!(1)).await;

    let unknown = uuid::Uuid::now_v7().to_string();
    let cases: Vec<(&str, &str, Value, u16, &str)> = vec![
        ("quantity 0", &lamp, json!(0), 422, "validation_failed"),
        ("quantity 100", &lamp, json!(100), 422, "validation_failed"),
        ("negative", &lamp, json!(-1), 422, "validation_failed"),
        ("quantity text", &lamp, json!("two"), 422, "validation_failed"),
        ("quantity fraction", &lamp, json!(1.5), 422, "validation_failed"),
        ("unknown product", &unknown, json!(1), 404, "product_not_found"),
        ("malformed id", "not-a-uuid", json!(1), 404, "product_not_found"),
        ("inactive product", &hidden, json!(1), 422, "product_unavailable"),
        ("deleted product", &gone, json!(1), 404, "product_not_found"),
        ("other currency", &euro, json!(1), 422, "currency_mismatch"),
    ];
    for (case, product, quantity, status, code) in cases {
        assert_problem(app.set(&ada, product, quantity).await, status, code, case).await;
    }
    let path = format!("/v1/cart/items/{lamp}");
    assert_problem(
        app.cart(Method::PUT, &path, Some(&ada), Some(json!({}))).await,
        422,
        "validation_failed",
        "missing quantity",
    )
    .await;
    assert_problem(
        app.cart(Method::PUT, &path, Some(&ada), Some(json!({"quantity": 1, "price": 0}))).await,
        422,
        "validation_failed",
        "price smuggled",
    )
    .await;
    assert_problem(
        app.cart(Method::DELETE, &format!("/v1/cart/items/{unknown}"), Some(&ada), None).await,
        404,
        "line_not_found",
        "remove absent line",
    )
    .await;
    let cart = app.view(&ada).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 1, "nothing bad got in: {cart}");

    // A cart of one currency may switch once it is empty again.
    app.cart(Method::DELETE, "/v1/cart", Some(&ada), None).await;
    assert_eq!(app.set(&ada, &euro, json!(1)).await.status(), 200);
}

#[tokio::test]
async fn concurrent_changes_to_one_cart_are_never_lost() {
    let app = spawn_app().await;
    let mut products = Vec::new();
    for index in 0..20 {
        products.push(app.product(&format!("P-{index}"), 100 + index, "USD"));
    }
    let (_, ada) = app.issuer.customer();
    let writes =
        products.iter().enumerate().map(|(index, product)| app.set(&ada, product, json!(index as i64 % 9 + 1)));
    for response in futures::future::join_all(writes).await {
        assert_eq!(response.status(), 200);
    }
    let cart = app.view(&ada).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 20, "every concurrent write landed");
    let expected: i64 = (0..20).map(|index| (100 + index) * (index % 9 + 1)).sum();
    assert_eq!(cart["total"]["amount"], expected);

    // Removals racing additions: each lands.
    let paths: Vec<String> = products[..10].iter().map(|product| format!("/v1/cart/items/{product}")).collect();
    let removals = paths.iter().map(|path| app.cart(Method::DELETE, path, Some(&ada), None));
    let updates = products[10..].iter().map(|product| app.set(&ada, product, json!(5)));
    let (removed, updated) =
        futures::future::join(futures::future::join_all(removals), futures::future::join_all(updates)).await;
    assert!(removed.iter().chain(updated.iter()).all(|response| response.status() == 200));
    let cart = app.view(&ada).await;
    assert_eq!(cart["items"].as_array().unwrap().len(), 10);
    assert!(cart["items"].as_array().unwrap().iter().all(|item| item["quantity"] == 5));
}

#[tokio::test]
async fn carts_are_bounded_and_expire_when_left_alone() {
    let app = spawn_with(|vars| vars.with("CART_MAX_LINES", "2").with("CART_IDLE_TTL", "1s")).await;
    let (a, b, c) = (app.product("A", 1, "USD"), app.product("B", 1, "USD"), app.product("C", 1, "USD"));
    let (ada_id, ada) = app.issuer.customer();
    app.set(&ada, &a, json!(1)).await;
    app.set(&ada, &b, json!(1)).await;
    assert_problem(app.set(&ada, &c, json!(1)).await, 409, "cart_full", "third line").await;
    assert_eq!(app.set(&ada, &a, json!(7)).await.status(), 200, "changing a line is fine when full");
    // Reading counts as activity, so watch the key itself rather than GET the cart.
    let key = format!("{}cart:{ada_id}", app.cart_redis.prefix());
    let mut redis =
        redis::Client::open(app.cart_redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    assert!(redis::cmd("EXISTS").arg(&key).query_async::<bool>(&mut redis).await.unwrap());
    shop_testkit::eventually("the idle cart to expire", Duration::from_secs(10), || {
        let mut redis = redis.clone();
        let key = key.clone();
        async move { (!redis::cmd("EXISTS").arg(&key).query_async::<bool>(&mut redis).await.unwrap()).then_some(()) }
    })
    .await;
    assert!(app.view(&ada).await["items"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn a_product_service_outage_is_a_503_and_reads_still_work() {
    let app =
        spawn_with(|vars| vars.with("PRODUCT_GRPC_URL", "http://127.0.0.1:9").with("PRODUCT_DEADLINE", "500ms")).await;
    let (_, ada) = app.issuer.customer();
    let id = uuid::Uuid::now_v7().to_string();
    assert_problem(app.set(&ada, &id, json!(1)).await, 503, "product_service_unavailable", "down").await;
    assert_eq!(app.cart(Method::GET, "/v1/cart", Some(&ada), None).await.status(), 200);
}

#[tokio::test]
async fn only_the_order_service_reads_and_clears_carts_over_grpc() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, "USD");
    let (ada_id, ada) = app.issuer.customer();
    let (_, bob) = app.issuer.customer();
    app.set(&ada, &lamp, json!(2)).await;
    // The price came with the cart's own token for product, for Ada, not with Ada's token.
    let calls = app.catalog.calls();
    assert!(!calls.is_empty());
    for call in calls {
        assert_eq!(
            (call.subject.as_deref(), call.audience.as_deref(), call.acting_for.clone()),
            (Some("cart"), Some("service:product"), Some(ada_id.to_string())),
            "{call:?}"
        );
    }
    let channel = tonic::transport::Channel::from_shared(app.cart.url("")).unwrap().connect().await.unwrap();
    let mut client = CartServiceClient::new(channel);
    let with = |token: &str| {
        shop_kit::grpc::with_bearer(tonic::Request::new(GetCartRequest { user_id: ada_id.to_string() }), token)
    };

    let order = app.issuer.service_token("order", "cart");
    let cart = client.get_cart(with(&order)).await.unwrap().into_inner().cart.unwrap();
    assert_eq!(cart.items.len(), 1);
    assert_eq!(cart.items[0].quantity, 2);
    assert_eq!(cart.total.unwrap().amount, 5998);
    // Only the order service: not the owner herself, another customer, an admin, another
    // service, or order's token for another callee.
    let refusals = [
        ("the owner", ada.clone(), Code::PermissionDenied),
        ("another customer", bob, Code::PermissionDenied),
        ("an admin", app.admin.clone(), Code::PermissionDenied),
        ("the payment service", app.issuer.service_token("payment", "cart"), Code::PermissionDenied),
        ("order's token for product", app.issuer.service_token("order", "product"), Code::Unauthenticated),
    ];
    for (who, token, code) in refusals {
        assert_eq!(client.get_cart(with(&token)).await.unwrap_err().code(), code, "GetCart as {who}");
        let clear =
            shop_kit::grpc::with_bearer(tonic::Request::new(ClearCartRequest { user_id: ada_id.to_string() }), &token);
        assert_eq!(client.clear_cart(clear).await.unwrap_err().code(), code, "ClearCart as {who}");
    }
    let anonymous = client.get_cart(GetCartRequest { user_id: ada_id.to_string() }).await.unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);
    let bad = shop_kit::grpc::with_bearer(tonic::Request::new(GetCartRequest { user_id: "x".into() }), &order);
    assert_eq!(client.get_cart(bad).await.unwrap_err().code(), Code::InvalidArgument);
    assert_eq!(app.view(&ada).await["items"].as_array().unwrap().len(), 1, "nothing was cleared by a refused call");

    let clear =
        shop_kit::grpc::with_bearer(tonic::Request::new(ClearCartRequest { user_id: ada_id.to_string() }), &order);
    client.clear_cart(clear).await.unwrap();
    assert!(app.view(&ada).await["items"].as_array().unwrap().is_empty());
}

/// Publishes an OrderPlaced for `user` naming `products`, with this CloudEvents id.
async fn order_placed(app: &crate::helpers::TestApp, ce_id: uuid::Uuid, user: uuid::Uuid, products: &[&str]) {
    use rdkafka::{
        message::{Header, OwnedHeaders},
        producer::FutureRecord,
    };
    let placed = shop_proto::shop::events::v1::OrderPlaced {
        order_id: uuid::Uuid::now_v7().to_string(),
        user_id: user.to_string(),
        lines: products
            .iter()
            .map(|id| shop_proto::shop::events::v1::OrderLine {
                product_id: (*id).to_owned(),
                quantity: 1,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let kafka = shop_kit::events::KafkaConfig::for_brokers(
        &std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into()),
    );
    let producer = kafka.producer().unwrap();
    let id = ce_id.to_string();
    let headers = OwnedHeaders::new()
        .insert(Header { key: "ce_id", value: Some(id.as_str()) })
        .insert(Header { key: "ce_type", value: Some("shop.order.v1.OrderPlaced") })
        .insert(Header { key: "ce_source", value: Some("/shop/order") });
    let payload = prost::Message::encode_to_vec(&placed);
    let topic = format!("{}shop.order.v1", app.topic_prefix);
    let key = user.to_string();
    let record = FutureRecord::to(&topic).key(&key).payload(&payload).headers(headers);
    producer.send(record, Duration::from_secs(5)).await.unwrap();
}

#[tokio::test]
async fn order_placed_removes_the_ordered_lines_exactly_once() {
    let app = spawn_app().await;
    let (a, b, c) = (app.product("A", 100, "USD"), app.product("B", 200, "USD"), app.product("C", 300, "USD"));
    let (user, token) = app.issuer.customer();
    app.set(&token, &a, json!(1)).await;
    app.set(&token, &b, json!(1)).await;
    let skus = |cart: &Value| -> Vec<String> {
        let mut ids: Vec<String> =
            cart["items"].as_array().unwrap().iter().map(|i| i["product_id"].as_str().unwrap().to_owned()).collect();
        ids.sort();
        ids
    };
    let first = uuid::Uuid::now_v7();
    order_placed(&app, first, user, &[&a]).await;
    shop_testkit::eventually("the ordered line to go", Duration::from_secs(30), || async {
        (skus(&app.view(&token).await) == [b.clone()]).then_some(())
    })
    .await;
    // The buyer adds A again; then the same event is delivered a second time, then another.
    app.set(&token, &a, json!(2)).await;
    app.set(&token, &c, json!(1)).await;
    order_placed(&app, first, user, &[&a]).await;
    order_placed(&app, uuid::Uuid::now_v7(), user, &[&c]).await;
    shop_testkit::eventually(
        "the later event (same partition, so after the duplicate)",
        Duration::from_secs(30),
        || async { (!skus(&app.view(&token).await).contains(&c)).then_some(()) },
    )
    .await;
    let mut expected = vec![a.clone(), b.clone()];
    expected.sort();
    assert_eq!(skus(&app.view(&token).await), expected, "the duplicate removed nothing");
}

/// An OrderPlaced that arrives late (after a broker outage) removes the lines as they were
/// when the order was placed, and leaves a line the buyer set since.
#[tokio::test]
async fn a_late_order_placed_leaves_lines_set_after_the_order() {
    let app = spawn_app().await;
    let (a, b) = (app.product("A", 100, "USD"), app.product("B", 200, "USD"));
    let (user, token) = app.issuer.customer();
    app.set(&token, &a, json!(1)).await;
    app.set(&token, &b, json!(1)).await;
    // The order is placed (its event id minted) now; once the clock has moved past that
    // millisecond the buyer sets A again; then the event comes.
    let placed = uuid::Uuid::now_v7();
    let (seconds, nanos) = placed.get_timestamp().unwrap().to_unix();
    let placed_ms = u128::from(seconds) * 1000 + u128::from(nanos / 1_000_000);
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() <= placed_ms {
        tokio::task::yield_now().await;
    }
    app.set(&token, &a, json!(3)).await;
    order_placed(&app, placed, user, &[&a, &b]).await;
    let cart = shop_testkit::eventually("B removed", Duration::from_secs(30), || async {
        let cart = app.view(&token).await;
        (cart["items"].as_array()?.len() == 1).then_some(cart)
    })
    .await;
    assert_eq!(cart["items"][0]["product_id"], json!(a), "A was set after the order: kept");
    assert_eq!(cart["items"][0]["quantity"], 3);
}

/// With its Redis unreachable, the cart answers 503 `cache_unavailable` (retry later; nothing
/// changed), is unready, and serves again once Redis is back.
#[tokio::test]
async fn a_redis_outage_is_a_503_and_the_cart_comes_back() {
    let proxy = shop_testkit::TcpProxy::start("127.0.0.1:6379").await;
    let address = proxy.address();
    let app =
        spawn_with(|vars| vars.with("REDIS_URL", format!("redis://{address}")).with("REDIS_TIMEOUT", "300ms")).await;
    let lamp = app.catalog.add("Lamp", 2999, "USD", 10);
    let (_, token) = app.issuer.customer();
    assert_eq!(app.set(&token, &lamp, serde_json::json!(1)).await.status(), 200);

    proxy.cut();
    let read = app.cart(reqwest::Method::GET, "/v1/cart", Some(&token), None).await;
    let problem = crate::helpers::assert_problem(read, 503, "cache_unavailable", "read during the outage").await;
    assert!(!problem.to_string().contains("6379"), "no connection details: {problem}");
    let write = app.set(&token, &lamp, serde_json::json!(2)).await;
    crate::helpers::assert_problem(write, 503, "cache_unavailable", "write during the outage").await;
    let ready = app.client.get(app.cart.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503, "Redis is what a cart is made of");

    proxy.restore();
    let cart = shop_testkit::eventually("the cart back", std::time::Duration::from_secs(30), || async {
        let read = app.cart(reqwest::Method::GET, "/v1/cart", Some(&token), None).await;
        (read.status() == 200).then_some(read)
    })
    .await;
    let cart: serde_json::Value = cart.json().await.unwrap();
    assert_eq!(cart["items"][0]["quantity"], 1, "the refused write changed nothing: {cart}");
}
