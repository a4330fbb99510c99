//! The shared server, run for real on an ephemeral port: draining on shutdown, readiness
//! that follows its dependencies, and answers for every kind of bad request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use std::{sync::Arc, time::Duration};

use tokio::sync::Notify;

use axum::{Router, routing::get};
use serde_json::Value;
use shop_kit::{
    config::HttpConfig,
    server::{Check, Criticality, Server},
};
use shop_testkit::{TestServer, http_client};

fn config() -> HttpConfig {
    HttpConfig {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        request_timeout: Duration::from_millis(500),
        body_limit_bytes: 1024,
        shutdown_grace: Duration::from_secs(5),
        shutdown_timeout: Duration::from_secs(10),
        trusted_proxy_hops: 0,
        trusted_proxy_header: shop_kit::config::ProxyHeader::XForwardedFor,
        cors_allowed_origins: Vec::new(),
        metrics_listen_addr: None,
        grpc_reflection: true,
        readyz_details: true,
    }
}

fn routes() -> Router {
    Router::new()
        .route(
            "/stuck",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "never"
            }),
        )
        .route("/panic", get(panics))
}

async fn panics() -> &'static str {
    let message = String::from("boom");
    if !message.is_empty() {
        panic!("{message}");
    }
    "unreachable"
}

#[tokio::test]
async fn shutdown_drains_requests_in_flight() {
    shop_testkit::init_tracing();
    let entered = Arc::new(Notify::new());
    let signal = Arc::clone(&entered);
    let slow = Router::new().route(
        "/in-flight",
        get(move || async move {
            signal.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
            "done"
        }),
    );
    let bound = Server::new("test", config()).rest(slow).bind().await.unwrap();
    let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
    let client = http_client();
    let in_flight = tokio::spawn(client.get(server.url("/in-flight")).send());
    entered.notified().await;
    let address = server.address();
    server.stop().await.unwrap();
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), 200, "the request in flight must complete");
    assert_eq!(response.text().await.unwrap(), "done");
    assert!(tokio::net::TcpStream::connect(address).await.is_err(), "no new connections after shutdown");
}

#[tokio::test]
async fn timeouts_and_panics_become_problems() {
    shop_testkit::init_tracing();
    let bound = Server::new("test", config()).rest(routes()).bind().await.unwrap();
    let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
    let client = http_client();
    let stuck = client.get(server.url("/stuck")).send().await.unwrap();
    assert_eq!(stuck.status(), 503);
    let problem: Value = stuck.json().await.unwrap();
    assert_eq!(problem["code"], "request_timeout");
    let panicked = client.get(server.url("/panic")).send().await.unwrap();
    assert_eq!(panicked.status(), 500);
    let problem: Value = panicked.json().await.unwrap();
    assert_eq!(problem["code"], "internal");
    assert!(!problem.to_string().contains("boom"), "{problem}");
    // The server survives both.
    assert_eq!(client.get(server.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn readiness_follows_required_and_optional_dependencies() {
    shop_testkit::init_tracing();
    let cases = [
        ("all ok", Ok(()), Ok(()), 200, "ready"),
        ("optional failing", Ok(()), Err("cache down"), 200, "degraded"),
        ("required failing", Err("db down"), Ok(()), 503, "unavailable"),
    ];
    for (case, required, optional, status, word) in cases {
        let required =
            Check::new("database", Criticality::Required, move || async move { required.map_err(String::from) });
        let optional =
            Check::new("cache", Criticality::Optional, move || async move { optional.map_err(String::from) });
        let bound = Server::new("test", config()).check(required).check(optional).bind().await.unwrap();
        let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
        let response = http_client().get(server.url("/readyz")).send().await.unwrap();
        assert_eq!(response.status(), status, "case {case}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["status"], word, "case {case}: {body}");
        // Liveness does not depend on anything.
        assert_eq!(http_client().get(server.url("/healthz")).send().await.unwrap().status(), 200, "case {case}");
    }
}

#[tokio::test]
async fn a_real_postgres_that_goes_away_makes_the_service_unready() {
    shop_testkit::init_tracing();
    let db = shop_testkit::TestDb::new().await;
    let pool = shop_kit::db::connect(&shop_kit::db::DatabaseConfig::for_url(db.url())).await.unwrap();
    let bound = Server::new("test", config()).check(Check::postgres(pool.clone())).bind().await.unwrap();
    let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
    assert_eq!(http_client().get(server.url("/readyz")).send().await.unwrap().status(), 200);
    pool.close().await;
    let response = http_client().get(server.url("/readyz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["checks"]["postgres"]["status"], "failing", "{body}");
}

#[tokio::test]
async fn the_client_address_comes_from_trusted_proxies_only() {
    shop_testkit::init_tracing();
    let echo = || {
        Router::new().route(
            "/ip",
            get(|shop_kit::server::ClientIp(ip): shop_kit::server::ClientIp| async move { ip.to_string() }),
        )
    };
    use shop_kit::config::ProxyHeader::{Forwarded, XForwardedFor};
    let cases = [
        (XForwardedFor, 0, "x-forwarded-for", "203.0.113.9, 10.0.0.1", "127.0.0.1"),
        (XForwardedFor, 1, "x-forwarded-for", "203.0.113.9, 10.0.0.1", "10.0.0.1"),
        (XForwardedFor, 2, "x-forwarded-for", "203.0.113.9, 10.0.0.1", "203.0.113.9"),
        (XForwardedFor, 5, "x-forwarded-for", "203.0.113.9", "127.0.0.1"),
        // The proxy appends to one header only; whatever the client put in the other is ignored.
        (XForwardedFor, 1, "forwarded", "for=203.0.113.9", "127.0.0.1"),
        (Forwarded, 1, "x-forwarded-for", "203.0.113.9", "127.0.0.1"),
        (
            Forwarded,
            1,
            "forwarded",
            "for=198.51.100.7, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            "2001:db8:cafe::17",
        ),
        (Forwarded, 2, "forwarded", "for=198.51.100.7;by=10.0.0.1, For=10.0.0.2", "198.51.100.7"),
        (Forwarded, 1, "forwarded", "for=unknown", "127.0.0.1"),
        (Forwarded, 1, "forwarded", "for=_hidden", "127.0.0.1"),
    ];
    // A client's own entry with a byte that is not ASCII does not hide the proxy's.
    let proxied = HttpConfig { trusted_proxy_hops: 1, ..config() };
    let bound = Server::new("test", proxied).rest(echo()).bind().await.unwrap();
    let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
    let header = reqwest::header::HeaderValue::from_bytes(b"caf\xe9, 198.51.100.4").unwrap();
    let ip = http_client().get(server.url("/ip")).header("x-forwarded-for", header).send().await.unwrap();
    assert_eq!(ip.text().await.unwrap(), "198.51.100.4");
    for (kind, hops, name, header, expected) in cases {
        let config = HttpConfig { trusted_proxy_hops: hops, trusted_proxy_header: kind, ..config() };
        let bound = Server::new("test", config).rest(echo()).bind().await.unwrap();
        let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
        let ip = http_client().get(server.url("/ip")).header(name, header).send().await.unwrap().text().await.unwrap();
        assert_eq!(ip, expected, "case {kind:?} hops={hops} {name}: {header}");
    }
}

#[tokio::test]
async fn a_stop_names_and_abandons_a_task_that_ignores_it_and_ends_by_the_deadline() {
    let config =
        HttpConfig { shutdown_grace: Duration::from_millis(200), shutdown_timeout: Duration::from_secs(5), ..config() };
    let bound = Server::new("test", config).rest(routes()).bind().await.unwrap();
    let address = bound.local_addr();
    let service = shop_kit::service::Service::new(bound)
        .background("stubborn", |_shutdown| std::future::pending::<()>())
        .background("polite", |shutdown| async move { shutdown.cancelled().await });
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(service.run_until_stopped(shutdown.clone()));
    shop_testkit::eventually("the server answering", Duration::from_secs(5), || async {
        http_client().get(format!("http://{address}/healthz")).send().await.ok().map(drop)
    })
    .await;
    let started = std::time::Instant::now();
    shutdown.cancel();
    let stopped = run.await.unwrap().unwrap();
    assert_eq!(stopped.abandoned, vec!["stubborn".to_owned()]);
    assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
}

async fn grpc(client: &reqwest::Client, server: &TestServer, path: &str) {
    let request = client.post(server.url(path)).header("content-type", "application/grpc");
    let _ = request.body(vec![0_u8, 0, 0, 0, 0]).send().await;
}

/// One request of each made-up kind, numbered `index`.
async fn round(client: &reqwest::Client, server: &TestServer, index: usize) {
    grpc(client, server, &format!("/grpc.health.v1.Health/x{index}")).await;
    grpc(client, server, &format!("/shop.made.up.v{index}.Service/Method")).await;
    let method = reqwest::Method::from_bytes(format!("M{index}").as_bytes()).unwrap();
    let _ = client.request(method, server.url(&format!("/stuck/{index}"))).send().await;
    let _ = client.get(server.url(&format!("/made/up/{index}"))).send().await;
}

/// Anonymous requests to made-up gRPC methods, paths and HTTP methods add no series: they are
/// `unmatched` and `other`, while real gRPC methods keep their own, with their outcome by
/// `grpc-status`.
#[tokio::test]
async fn ten_thousand_made_up_paths_and_methods_do_not_grow_the_metrics() {
    shop_testkit::init_tracing();
    let bound = Server::new("test", config()).rest(routes()).bind().await.unwrap();
    let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
    let client = http_client();
    let series = || async {
        let metrics = client.get(server.url("/metrics")).send().await.unwrap().text().await.unwrap();
        metrics.lines().filter(|line| line.starts_with("http_requests_total{")).map(str::to_owned).collect::<Vec<_>>()
    };
    // Every kind once, then 10,000 more requests of the same kinds: not one more series.
    round(&client, &server, 0).await;
    let _ = grpc(&client, &server, "/grpc.health.v1.Health/Check").await;
    series().await;
    let before = series().await;
    for batch in 0..25 {
        futures::future::join_all((0..100).map(|index| round(&client, &server, 1 + batch * 100 + index))).await;
    }
    let after = series().await;
    let names = |series: &[String]| {
        let mut names: Vec<String> = series.iter().map(|line| line.rsplit_once(' ').unwrap().0.to_owned()).collect();
        names.sort();
        names
    };
    assert_eq!(names(&after), names(&before), "10,000 requests added no series");
    assert!(
        after.iter().all(|line| !line.contains("/x") && !line.contains("made") && !line.contains("method=\"M")),
        "{after:#?}"
    );
    assert!(
        after.iter().any(|line| line.contains("route=\"unmatched\"") && line.contains("protocol=\"grpc\"")),
        "{after:#?}"
    );
    assert!(after.iter().any(|line| line.contains("method=\"other\"")), "{after:#?}");
    // An unknown method of a real service is UNIMPLEMENTED, not a success hidden behind HTTP 200.
    assert!(after.iter().any(|line| line.contains("grpc_status=\"UNIMPLEMENTED\"")), "{after:#?}");
    assert!(
        after
            .iter()
            .any(|line| line.contains("route=\"/grpc.health.v1.Health/Check\"") && !line.contains("UNIMPLEMENTED")),
        "{after:#?}"
    );
}

/// CORS only for the configured origins: a preflight from one of them is answered with the
/// methods and headers the API uses; any other origin, or no configuration, gets no CORS
/// headers (so the browser refuses).
#[tokio::test]
async fn cross_origin_calls_are_allowed_only_from_the_configured_origins() {
    shop_testkit::init_tracing();
    let allowed = HttpConfig { cors_allowed_origins: vec!["https://shop.example".into()], ..config() };
    let bound = Server::new("test", allowed).rest(routes()).bind().await.unwrap();
    let server = TestServer::spawn(bound.local_addr(), |shutdown| bound.run(shutdown));
    let closed = Server::new("test", config()).rest(routes()).bind().await.unwrap();
    let closed = TestServer::spawn(closed.local_addr(), |shutdown| closed.run(shutdown));
    let client = http_client();
    let preflight = |server: &TestServer, origin: &str| {
        client
            .request(reqwest::Method::OPTIONS, server.url("/v1/anything"))
            .header("origin", origin)
            .header("access-control-request-method", "PATCH")
            .header("access-control-request-headers", "authorization, if-match")
            .send()
    };
    let answer = preflight(&server, "https://shop.example").await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
    let headers = answer.headers();
    assert_eq!(headers["access-control-allow-origin"], "https://shop.example");
    assert!(headers["access-control-allow-methods"].to_str().unwrap().contains("PATCH"));
    assert!(headers["access-control-allow-headers"].to_str().unwrap().contains("if-match"));
    for (server, origin) in [(&server, "https://evil.example"), (&closed, "https://shop.example")] {
        let answer = preflight(server, origin).await.unwrap();
        assert!(answer.headers().get("access-control-allow-origin").is_none(), "{origin}: {:?}", answer.headers());
    }
    let read = client.get(server.url("/healthz")).header("origin", "https://shop.example").send().await.unwrap();
    assert_eq!(read.headers()["access-control-allow-origin"], "https://shop.example");
    assert!(read.headers()["access-control-expose-headers"].to_str().unwrap().contains("x-request-id"));
}

/// What the public port shows can be narrowed: `/metrics` moves to its own port
/// (`METRICS_LISTEN_ADDR`), reflection goes (`GRPC_REFLECTION=false`), and `/readyz` keeps only
/// its status (`READYZ_DETAILS=false`). With the defaults all three are on the one port.
#[tokio::test]
async fn metrics_reflection_and_readiness_details_can_be_kept_off_the_public_port() {
    shop_testkit::init_tracing();
    let client = http_client();
    let reflect = |server: &TestServer| {
        client
            .post(server.url("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"))
            .header("content-type", "application/grpc")
            .body(vec![0_u8, 0, 0, 0, 0])
            .send()
    };

    let open = Server::new("test", config()).rest(routes()).bind().await.unwrap();
    assert!(open.metrics_addr().is_none());
    let open = TestServer::spawn(open.local_addr(), |shutdown| open.run(shutdown));
    assert_eq!(client.get(open.url("/metrics")).send().await.unwrap().status(), 200);
    let ready: Value = client.get(open.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert!(ready.get("checks").is_some(), "{ready}");
    let reflection = reflect(&open).await.unwrap();
    assert_ne!(reflection.headers().get("grpc-status").map(|v| v.to_str().unwrap()), Some("12"), "reflection served");

    let closed = HttpConfig {
        metrics_listen_addr: Some("127.0.0.1:0".parse().unwrap()),
        grpc_reflection: false,
        readyz_details: false,
        ..config()
    };
    let closed = Server::new("test", closed).rest(routes()).bind().await.unwrap();
    let metrics = closed.metrics_addr().unwrap();
    let closed = TestServer::spawn(closed.local_addr(), |shutdown| closed.run(shutdown));
    assert_eq!(client.get(closed.url("/metrics")).send().await.unwrap().status(), 404, "not on the public port");
    let scrape = client.get(format!("http://{metrics}/metrics")).send().await.unwrap();
    assert_eq!(scrape.status(), 200);
    assert!(scrape.text().await.unwrap().contains("shop_build_info"), "the metrics port serves the exposition");
    assert_eq!(client.get(format!("http://{metrics}/readyz")).send().await.unwrap().status(), 404, "and nothing else");
    let ready: Value = client.get(closed.url("/readyz")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ready, serde_json::json!({"status": "ready"}));
    let reflection = reflect(&closed).await.unwrap();
    // No gRPC route: HTTP 404, which gRPC clients report as UNIMPLEMENTED.
    assert_eq!(reflection.status(), 404, "reflection is off");
}
