use std::process::Command;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{assert_problem, spawn_app};

#[tokio::test]
async fn health_readiness_metrics_and_openapi() {
    let app = spawn_app().await;
    let health: Value = app.client.get(app.url("/healthz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: Value = ready.json().await.unwrap();
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["checks"]["postgres"]["status"], "ok");
    assert_eq!(ready["checks"]["redis"]["status"], "ok");

    app.customer("ada@example.com").await;
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    let line = metrics
        .lines()
        .find(|line| {
            line.starts_with("http_requests_total{")
                && line.contains(r#"route="/v1/users""#)
                && line.contains(r#"status="201""#)
        })
        .unwrap_or_else(|| panic!("no request counter for POST /v1/users in:\n{metrics}"));
    assert!(line.contains(r#"method="POST""#), "{line}");
    assert!(metrics.contains("http_request_duration_seconds_bucket{"), "histogram missing");
    shop_testkit::assert_metrics_well_formed(&metrics);
    let build_info = metrics.lines().find(|line| line.starts_with("shop_build_info{")).unwrap();
    assert!(build_info.contains(r#"service="user-service""#) && build_info.ends_with(" 1"), "{build_info}");

    let openapi: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    for path in
        ["/v1/users", "/v1/users/me", "/v1/auth/login", "/v1/auth/refresh", "/v1/auth/logout", "/.well-known/jwks.json"]
    {
        assert!(openapi["paths"].get(path).is_some(), "OpenAPI lacks {path}");
    }
    assert!(openapi["components"]["securitySchemes"]["bearer"].is_object());
}

#[tokio::test]
async fn unknown_routes_methods_ids_and_traces() {
    let app = spawn_app().await;
    assert_problem(app.client.get(app.url("/nope")).send().await.unwrap(), 404, "route_not_found", "unknown route")
        .await;
    assert_problem(
        app.client.delete(app.url("/v1/users")).send().await.unwrap(),
        405,
        "method_not_allowed",
        "wrong method",
    )
    .await;

    let response = app.client.get(app.url("/healthz")).header("x-request-id", "req-123").send().await.unwrap();
    assert_eq!(response.headers()["x-request-id"], "req-123");
    let generated = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(generated.headers()["x-request-id"].len(), 36);

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let traced = app
        .client
        .get(app.url("/healthz"))
        .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.headers()["x-trace-id"], trace_id, "the caller's trace must continue");
    let fresh = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_ne!(fresh.headers()["x-trace-id"], trace_id);
}

#[tokio::test]
async fn migrations_are_safe_when_replicas_start_together() {
    let db = shop_testkit::TestDb::new().await;
    let pools: Vec<sqlx::PgPool> = futures_pools(db.url(), 4).await;
    let runs = pools.iter().map(|pool| shop_kit::db::migrate(pool, &user_service::MIGRATOR));
    for result in futures::future::join_all(runs).await {
        result.unwrap();
    }
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&pools[0]).await.unwrap();
    assert_eq!(applied, user_service::MIGRATOR.iter().count() as i64);
}

async fn futures_pools(url: &str, count: usize) -> Vec<sqlx::PgPool> {
    let mut pools = Vec::new();
    for _ in 0..count {
        pools.push(sqlx::PgPool::connect(url).await.unwrap());
    }
    pools
}

#[test]
fn a_bad_configuration_stops_the_binary_with_one_line_naming_the_variable() {
    let cases = [
        (vec![], "DATABASE_URL is required"),
        (
            vec![("DATABASE_URL", "postgres://x/y"), ("SHOP_DEV_MODE", "true"), ("LISTEN_ADDR", "nowhere")],
            "LISTEN_ADDR",
        ),
        (vec![("DATABASE_URL", "postgres://x/y")], "JWT_SIGNING_KEY_FILE"),
    ];
    for (vars, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_user-service")).env_clear().envs(vars).output().unwrap();
        assert!(!output.status.success(), "case {expected}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "case {expected}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "case {expected}: one line, got {stderr}");
    }
}
