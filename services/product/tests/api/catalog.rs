use std::collections::HashSet;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{assert_problem, spawn_app, spawn_replica, spawn_with};

#[tokio::test]
async fn admins_manage_the_catalog_and_everyone_else_is_refused() {
    let app = spawn_app().await;
    let (_, customer) = app.issuer.customer();
    let product = app.create("LAMP-1", "Desk lamp", "A lamp.", 5).await;
    let id = product["id"].as_str().unwrap().to_owned();
    assert_eq!(product["sku"], "LAMP-1");
    assert_eq!(product["price"], json!({"amount": 1999, "currency": "USD"}));
    assert_eq!(product["stock_available"], 5);
    assert_eq!(product["categories"], json!(["testing"]));

    let create = json!({"sku": "X-1", "name": "X", "price": {"amount": 1, "currency": "USD"}});
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::POST, "/v1/products".into(), Some(create)),
        (Method::PATCH, format!("/v1/products/{id}"), Some(json!({"name": "New"}))),
        (Method::DELETE, format!("/v1/products/{id}"), None),
        (Method::PUT, format!("/v1/products/{id}/stock"), Some(json!({"on_hand": 3}))),
    ];
    for (method, path, body) in &routes {
        let case = format!("{method} {path}");
        assert_problem(
            app.send(method.clone(), path, None, body.as_ref()).await,
            401,
            "unauthenticated",
            &format!("{case} anonymous"),
        )
        .await;
        assert_problem(
            app.send(method.clone(), path, Some("not.a.token"), body.as_ref()).await,
            401,
            "unauthenticated",
            &format!("{case} bad token"),
        )
        .await;
        // 403 even with a bad body: the role is checked first.
        assert_problem(
            app.send(method.clone(), path, Some(&customer), Some(&json!({"junk": 1}))).await,
            403,
            "forbidden",
            &format!("{case} customer"),
        )
        .await;
    }

    let patched: Value = app.send(Method::PATCH, &format!("/v1/products/{id}"), Some(&app.admin),
        Some(&json!({"name": "Brass desk lamp", "price": {"amount": 2500, "currency": "USD"}, "categories": ["lighting", "home-office"]}))).await.json().await.unwrap();
    assert_eq!(patched["name"], "Brass desk lamp");
    assert_eq!(patched["price"]["amount"], 2500);
    assert_eq!(patched["categories"], json!(["home-office", "lighting"]));
    let stock: Value = app
        .send(Method::PUT, &format!("/v1/products/{id}/stock"), Some(&app.admin), Some(&json!({"on_hand": 42})))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stock["stock_available"], 42);
    let categories: Value = app.get("/v1/categories").await.json().await.unwrap();
    let slugs: Vec<&str> =
        categories["items"].as_array().unwrap().iter().map(|c| c["slug"].as_str().unwrap()).collect();
    assert!(slugs.contains(&"lighting") && slugs.contains(&"home-office"), "{categories}");

    assert_eq!(app.send(Method::DELETE, &format!("/v1/products/{id}"), Some(&app.admin), None).await.status(), 204);
    assert_problem(app.get(&format!("/v1/products/{id}")).await, 404, "product_not_found", "after delete").await;
    assert_problem(
        app.send(Method::DELETE, &format!("/v1/products/{id}"), Some(&app.admin), None).await,
        404,
        "product_not_found",
        "delete twice",
    )
    .await;
    let listed: Value = app.get("/v1/products").await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty(), "deleted products are not listed: {listed}");
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_problem() {
    let app = spawn_app().await;
    let product = app.create("SKU-1", "Thing", "", 2).await;
    let id = product["id"].as_str().unwrap().to_owned();
    let admin = Some(app.admin.as_str());
    let valid = || json!({"sku": "NEW-1", "name": "New", "price": {"amount": 100, "currency": "USD"}});
    let with = |key: &str, value: Value| {
        let mut body = valid();
        body[key] = value;
        body
    };
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        ("duplicate sku", with("sku", json!("sku-1")), 409, "sku_taken", ""),
        ("bad sku", with("sku", json!("has space")), 422, "validation_failed", "sku"),
        ("empty name", with("name", json!("")), 422, "validation_failed", "name"),
        ("long name", with("name", json!("n".repeat(201))), 422, "validation_failed", "name"),
        // The length as sent, as the schema's maxLength counts it.
        ("long with spaces", with("name", json!(format!(" {} ", "n".repeat(199)))), 422, "validation_failed", "name"),
        ("control character", with("name", json!("a\u{7}b")), 422, "validation_failed", "name"),
        (
            "negative price",
            with("price", json!({"amount": -1, "currency": "USD"})),
            422,
            "validation_failed",
            "price.amount",
        ),
        (
            "bad currency",
            with("price", json!({"amount": 1, "currency": "dollars"})),
            422,
            "validation_failed",
            "price.currency",
        ),
        (
            "float price",
            with("price", json!({"amount": 19.99, "currency": "USD"})),
            422,
            "validation_failed",
            "price.amount",
        ),
        ("missing price", json!({"sku": "A", "name": "B"}), 422, "validation_failed", "price"),
        ("bad category", with("categories", json!(["Bad Slug!"])), 422, "validation_failed", "categories[0]"),
        ("bad image", with("image_url", json!("javascript:alert(1)")), 422, "validation_failed", "image_url"),
        ("negative stock", with("stock", json!(-5)), 422, "validation_failed", "stock"),
        ("unknown field", with("color", json!("red")), 422, "validation_failed", "color"),
    ];
    for (case, body, status, code, field) in cases {
        let problem =
            assert_problem(app.send(Method::POST, "/v1/products", admin, Some(&body)).await, status, code, case).await;
        if !field.is_empty() {
            assert_eq!(problem["errors"][0]["field"], field, "case {case}: {problem}");
        }
    }
    let path = format!("/v1/products/{id}");
    // A PATCH that changes nothing answers the product as it is.
    let unchanged = app.send(Method::PATCH, &path, admin, Some(&json!({"name": null}))).await;
    assert_eq!(unchanged.status(), 200);
    let unchanged: Value = unchanged.json().await.unwrap();
    assert_eq!(
        (unchanged["name"].as_str(), unchanged["updated_at"].as_str()),
        (Some("Thing"), product["updated_at"].as_str())
    );
    // JSON Schema counts 3.0 as an integer, so a generated client may send it.
    let whole = app.send(Method::PUT, &format!("{path}/stock"), admin, Some(&json!({"on_hand": 3.0}))).await;
    assert_eq!(whole.status(), 200);
    assert_problem(
        app.send(Method::PUT, &format!("{path}/stock"), admin, Some(&json!({"on_hand": -1}))).await,
        422,
        "validation_failed",
        "negative stock",
    )
    .await;
    assert_problem(
        app.send(Method::PUT, &format!("{path}/stock"), admin, Some(&json!({"on_hand": "ten"}))).await,
        422,
        "validation_failed",
        "stock as text",
    )
    .await;
    assert_problem(
        app.send(Method::PUT, "/v1/products/nope/stock", admin, Some(&json!({"on_hand": 1}))).await,
        404,
        "product_not_found",
        "bad id",
    )
    .await;
    assert_problem(app.get("/v1/products/not-a-uuid").await, 404, "product_not_found", "bad id read").await;
    assert_problem(
        app.get(&format!("/v1/products/{}", uuid::Uuid::now_v7())).await,
        404,
        "product_not_found",
        "unknown id",
    )
    .await;
    for (case, query, status, code) in [
        ("limit 0", "limit=0", 422, "validation_failed"),
        ("limit 101", "limit=101", 422, "validation_failed"),
        ("limit text", "limit=lots", 422, "validation_failed"),
        ("bad cursor", "cursor=garbage", 400, "invalid_cursor"),
        ("long q", &format!("q={}", "a".repeat(201)), 422, "validation_failed"),
        ("bad category", "category=NOT%20A%20SLUG", 422, "validation_failed"),
    ] {
        assert_problem(app.get(&format!("/v1/products?{query}")).await, status, code, case).await;
    }
    // Injection attempts are just words.
    let safe = app.get("/v1/products?q=lamp')%20%7C%20!(x%3A*").await;
    assert_eq!(safe.status(), 200);
}

#[tokio::test]
async fn search_ranks_name_matches_above_description_matches() {
    let app = spawn_app().await;
    app.create("DESC-1", "Reading chair", "Sits nicely next to a lamp.", 1).await;
    app.create("NAME-1", "Brass lamp", "A warm light for reading.", 1).await;
    app.create("NONE-1", "Teapot", "Holds a litre.", 1).await;
    let found: Value = app.get("/v1/products?q=lamp").await.json().await.unwrap();
    let names: Vec<&str> = found["items"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Brass lamp", "Reading chair"]);
    let prefix: Value = app.get("/v1/products?q=LAM").await.json().await.unwrap();
    assert_eq!(prefix["items"].as_array().unwrap().len(), 2, "words match as prefixes");
    let both: Value = app.get("/v1/products?q=reading%20lamp").await.json().await.unwrap();
    assert_eq!(both["items"].as_array().unwrap().len(), 2, "{both}");
    let category: Value = app.get("/v1/products?category=testing&q=teapot").await.json().await.unwrap();
    assert_eq!(category["items"][0]["sku"], "NONE-1");
    let elsewhere: Value = app.get("/v1/products?category=other").await.json().await.unwrap();
    assert!(elsewhere["items"].as_array().unwrap().is_empty());
}

async fn collect_pages(app: &crate::helpers::TestApp, query: &str, late_prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut inserted = 0;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("/v1/products?{query}&limit=7&cursor={cursor}"),
            None => format!("/v1/products?{query}&limit=7"),
        };
        let page: Value = app.get(&url).await.json().await.unwrap();
        seen.extend(page["items"].as_array().unwrap().iter().map(|p| p["sku"].as_str().unwrap().to_owned()));
        inserted += 1;
        app.create(&format!("{late_prefix}-{inserted}"), &format!("Late widget {inserted}"), "inserted mid-walk", 1)
            .await;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return seen,
        }
    }
}

#[tokio::test]
async fn pages_have_no_duplicates_or_gaps_while_rows_are_inserted() {
    let app = spawn_app().await;
    for index in 0..30 {
        app.create(&format!("W-{index:02}"), &format!("Widget {index}"), "a widget", 1).await;
    }
    for (query, late) in [("", "LATE-A"), ("q=widget", "LATE-B")] {
        let seen = collect_pages(&app, query, late).await;
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "query {query:?}: duplicates in {seen:?}");
        for index in 0..30 {
            assert!(seen.contains(&format!("W-{index:02}")), "query {query:?}: W-{index:02} missing (a gap)");
        }
    }
}

#[tokio::test]
async fn a_read_after_a_write_never_sees_the_old_value() {
    let app = spawn_app().await;
    let product = app.create("C-1", "Original", "", 10).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    let first: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(first["name"], "Original");
    let mut redis = redis::Client::open(app.redis.url()).unwrap().get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}product:{}", app.redis.prefix(), product["id"].as_str().unwrap());
    let cached: Option<String> = redis::cmd("GET").arg(&key).query_async(&mut redis).await.unwrap();
    assert!(cached.unwrap().contains("Original"), "the read must have filled the cache");

    for round in 0..5 {
        let name = format!("Renamed {round}");
        app.send(Method::PATCH, &path, Some(&app.admin), Some(&json!({"name": name}))).await;
        let read: Value = app.get(&path).await.json().await.unwrap();
        assert_eq!(read["name"], name.as_str(), "round {round}");
        app.send(Method::PUT, &format!("{path}/stock"), Some(&app.admin), Some(&json!({"on_hand": round}))).await;
        let read: Value = app.get(&path).await.json().await.unwrap();
        assert_eq!(read["stock_available"], round, "round {round}");
    }
    // Reads racing writes: afterwards the cache holds the last write.
    let bodies: Vec<Value> = (0..20).map(|n| json!({"description": format!("v{n}")})).collect();
    let writes = bodies.iter().map(|body| app.send(Method::PATCH, &path, Some(&app.admin), Some(body)));
    let reads = (0..20).map(|_| app.get(&path));
    futures::future::join(futures::future::join_all(writes), futures::future::join_all(reads)).await;
    app.send(Method::PATCH, &path, Some(&app.admin), Some(&json!({"description": "final"}))).await;
    for _ in 0..3 {
        let read: Value = app.get(&path).await.json().await.unwrap();
        assert_eq!(read["description"], "final");
    }
}

#[tokio::test]
async fn a_write_on_one_replica_reaches_the_local_cache_of_another_at_once() {
    // A long local TTL: only the invalidation message can make the other replica see a write.
    let long = |vars: shop_kit::config::Vars| vars.with("PRODUCT_LOCAL_CACHE_TTL", "5m");
    let app = spawn_with(long).await;
    let other = spawn_replica(&app, long).await;
    let product = app.create("L-1", "Local", "", 10).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    let read_other = || async { app.client.get(other.url(&path)).send().await.unwrap().json::<Value>().await.unwrap() };

    for round in 0..3 {
        // Fill both replicas' local copies (the tier serves once each has subscribed).
        for _ in 0..3 {
            assert_eq!(app.get(&path).await.status(), 200);
            assert_eq!(read_other().await["stock_available"], 10 + round, "round {round}: before the write");
        }
        let stock = json!({"on_hand": 11 + round});
        let written = app.send(Method::PUT, &format!("{path}/stock"), Some(&app.admin), Some(&stock)).await;
        assert_eq!(written.status(), 200, "round {round}");
        let own: Value = app.get(&path).await.json().await.unwrap();
        assert_eq!(own["stock_available"], 11 + round, "round {round}: the writing replica reads its write at once");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let seen = read_other().await;
            if seen["stock_available"] == 11 + round {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "round {round}: the other replica still serves {seen}");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }
    let metrics = app.client.get(other.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"result="local_hit""#), "the other replica served from its local tier:\n{metrics}");
}

#[tokio::test]
async fn reads_keep_working_when_redis_goes_down() {
    let proxy = shop_testkit::TcpProxy::start("127.0.0.1:6379").await;
    let address = proxy.address();
    let app =
        spawn_with(|vars| vars.with("REDIS_URL", format!("redis://{address}")).with("REDIS_TIMEOUT", "200ms")).await;
    let product = app.create("R-1", "Resilient", "", 3).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    assert_eq!(app.get(&path).await.status(), 200);
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["status"], "ready");

    proxy.cut();
    for _ in 0..3 {
        let read = app.get(&path).await;
        assert_eq!(read.status(), 200, "reads fall back to Postgres");
        assert_eq!(read.json::<Value>().await.unwrap()["name"], "Resilient");
    }
    let patched = app.send(Method::PATCH, &path, Some(&app.admin), Some(&json!({"name": "Still writable"}))).await;
    assert_eq!(patched.status(), 200);
    let read: Value = app.get(&path).await.json().await.unwrap();
    assert_eq!(read["name"], "Still writable");
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), 200, "a cache outage does not take the service out");
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["redis"]["status"], "failing");
}

#[tokio::test]
async fn the_demo_catalog_loads_once_and_browses() {
    let app = spawn_app().await;
    let pool = app.pool().await;
    let seed = include_str!("../../seed/demo.sql");
    sqlx::raw_sql(seed).execute(&pool).await.unwrap();
    sqlx::raw_sql(seed).execute(&pool).await.unwrap();
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM products").fetch_one(&pool).await.unwrap();
    assert!(count >= 30, "{count}");
    let first: Value = app.get("/v1/products").await.json().await.unwrap();
    assert_eq!(first["items"].as_array().unwrap().len(), 20);
    assert!(first["next_cursor"].is_string());
    assert!(first["items"].as_array().unwrap().iter().all(|p| p["stock_available"].as_i64().unwrap() > 0));
    let categories: Value = app.get("/v1/categories").await.json().await.unwrap();
    let populated =
        categories["items"].as_array().unwrap().iter().filter(|c| c["product_count"].as_i64().unwrap() > 0).count();
    assert!(populated >= 5, "{categories}");
    let search: Value = app.get("/v1/products?q=headphones").await.json().await.unwrap();
    assert_eq!(search["items"][0]["sku"], "ELEC-HEADPHONES-01");
}

#[tokio::test]
async fn catalog_changes_are_published_on_the_product_topic() {
    use rdkafka::{Message as _, consumer::Consumer as _, message::Headers as _};
    use shop_proto::shop::events::v1::{ProductChanged, StockChanged};
    let app = spawn_app().await;
    let product = app.create("EVT-1", "Evented", "", 5).await;
    let id = product["id"].as_str().unwrap();
    app.send(Method::PUT, &format!("/v1/products/{id}/stock"), Some(&app.admin), Some(&json!({"on_hand": 9}))).await;
    app.send(Method::DELETE, &format!("/v1/products/{id}"), Some(&app.admin), None).await;

    let brokers = std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into());
    let reader = shop_kit::events::KafkaConfig::for_brokers(&brokers)
        .consumer(&format!("reader-{}", uuid::Uuid::now_v7()))
        .unwrap();
    reader.subscribe(&[format!("{}shop.product.v1", app.topic_prefix).as_str()]).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let message = tokio::time::timeout(std::time::Duration::from_secs(30), reader.recv())
            .await
            .expect("product events")
            .unwrap();
        assert_eq!(message.key(), Some(id.as_bytes()), "key = product id");
        let ce_type = message.headers().unwrap().iter().find(|h| h.key == "ce_type").and_then(|h| h.value).unwrap();
        seen.push((String::from_utf8_lossy(ce_type).into_owned(), message.payload().unwrap().to_vec()));
    }
    let types: Vec<&str> = seen.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        types,
        ["shop.product.v1.ProductChanged", "shop.product.v1.StockChanged", "shop.product.v1.ProductChanged"]
    );
    let stock: StockChanged = prost::Message::decode(seen[1].1.as_slice()).unwrap();
    assert_eq!((stock.on_hand, stock.available), (9, 9));
    let deleted: ProductChanged = prost::Message::decode(seen[2].1.as_slice()).unwrap();
    assert!(deleted.deleted && !deleted.active);
}

/// A product read carries an ETag and Cache-Control; a client that sends the ETag back gets
/// 304 until the product changes.
#[tokio::test]
async fn product_reads_revalidate_with_their_etag() {
    let app = spawn_app().await;
    let product = app.create("ETAG-1", "Tagged", "", 3).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    let first = app.get(&path).await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "public, max-age=5");
    assert_eq!(first.headers()["content-type"], "application/json");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"') && etag.len() == 26, "{etag}");
    assert_eq!(first.json::<Value>().await.unwrap()["name"], "Tagged");

    let conditional = |tag: String| app.client.get(app.url(&path)).header("if-none-match", tag).send();
    for tag in [etag.clone(), format!("W/{etag}"), format!("\"other\", {etag}"), "*".to_owned()] {
        let unchanged = conditional(tag.clone()).await.unwrap();
        assert_eq!(unchanged.status(), 304, "{tag}");
        assert_eq!(unchanged.headers()["etag"], etag.as_str());
        assert!(unchanged.bytes().await.unwrap().is_empty());
    }
    assert_eq!(conditional("\"other\"".into()).await.unwrap().status(), 200);

    let patched = app.send(Method::PATCH, &path, Some(&app.admin), Some(&json!({"name": "Retagged"}))).await;
    assert_eq!(patched.status(), 200);
    let changed = conditional(etag.clone()).await.unwrap();
    assert_eq!(changed.status(), 200, "a changed product is sent again");
    assert_ne!(changed.headers()["etag"], etag.as_str());
    assert_eq!(changed.json::<Value>().await.unwrap()["name"], "Retagged");
}

/// `If-Match` on `PATCH`: a change based on the current ETag applies and answers the new one;
/// a change based on an older read is 412 and changes nothing; a weak tag never matches.
#[tokio::test]
async fn a_patch_with_if_match_applies_only_to_the_product_as_read() {
    let app = spawn_app().await;
    let product = app.create("IFMATCH-1", "Original", "", 3).await;
    let path = format!("/v1/products/{}", product["id"].as_str().unwrap());
    let etag = app.get(&path).await.headers()["etag"].to_str().unwrap().to_owned();
    let patch = |tag: String, name: &str| {
        app.client
            .patch(app.url(&path))
            .bearer_auth(&app.admin)
            .header("if-match", tag)
            .json(&json!({"name": name}))
            .send()
    };

    let first = patch(etag.clone(), "First admin").await.unwrap();
    assert_eq!(first.status(), 200);
    let new_etag = first.headers()["etag"].to_str().unwrap().to_owned();
    assert_ne!(new_etag, etag);
    assert_eq!(app.get(&path).await.headers()["etag"], new_etag.as_str(), "the answer's ETag is the read's");

    // The second admin read before the first change.
    let stale = patch(etag.clone(), "Second admin").await.unwrap();
    assert_eq!(stale.status(), 412);
    assert_eq!(stale.json::<Value>().await.unwrap()["code"], "precondition_failed");
    let weak = patch(format!("W/{new_etag}"), "Weak").await.unwrap();
    assert_eq!(weak.status(), 412, "If-Match compares strongly");
    assert_eq!(app.get(&path).await.json::<Value>().await.unwrap()["name"], "First admin", "nothing overwritten");

    assert_eq!(patch(format!("\"other\", {new_etag}"), "Listed").await.unwrap().status(), 200);
    assert_eq!(patch("*".to_owned(), "Any").await.unwrap().status(), 200, "* matches a product that exists");
    let missing = format!("/v1/products/{}", uuid::Uuid::now_v7());
    let gone = app.client.patch(app.url(&missing)).bearer_auth(&app.admin).header("if-match", "*");
    assert_eq!(gone.json(&json!({"name": "x"})).send().await.unwrap().status(), 404);
}

/// The category list revalidates like a product read, and changes when a listing does.
#[tokio::test]
async fn the_category_list_revalidates_with_its_etag() {
    let app = spawn_app().await;
    app.create("CAT-ETAG-1", "Lamp", "", 3).await;
    let first = app.get("/v1/categories").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["cache-control"], "public, max-age=60");
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let conditional = |tag: String| app.client.get(app.url("/v1/categories")).header("if-none-match", tag).send();
    let unchanged = conditional(etag.clone()).await.unwrap();
    assert_eq!(unchanged.status(), 304);
    assert!(unchanged.bytes().await.unwrap().is_empty());
    let body = json!({"sku": "CAT-ETAG-2", "name": "Desk", "price": {"amount": 100, "currency": "USD"}, "categories": ["desks"]});
    assert_eq!(app.send(Method::POST, "/v1/products", Some(&app.admin), Some(&body)).await.status(), 201);
    let changed = conditional(etag).await.unwrap();
    assert_eq!(changed.status(), 200, "a new category changes the list");
    let listed: Value = changed.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().iter().any(|category| category["slug"] == "desks"), "{listed}");
}
