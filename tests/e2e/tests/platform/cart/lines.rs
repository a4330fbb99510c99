use reqwest::Method;
use serde_json::{Value, json};

use super::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn a_cart_is_priced_by_the_product_service_and_private_to_its_owner() {
    let app = spawn_app().await;
    let lamp = app.product("LAMP", 2999, "USD").await;
    let mug = app.product("MUG", 1250, "USD").await;
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
    let lamp = app.product("LAMP", 2999, "USD").await;
    let euro = app.product("EURO", 1000, "EUR").await;
    let hidden = app.product("HIDDEN", 1000, "USD").await;
    let gone = app.product("GONE", 1000, "USD").await;
    app.admin_product(Method::PATCH, &format!("/v1/products/{hidden}"), Some(json!({"active": false}))).await;
    app.admin_product(Method::DELETE, &format!("/v1/products/{gone}"), None).await;
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
