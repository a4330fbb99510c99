//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`, and the RED
//! middleware that counts and times every request by route, method and status.
//!
//! Routes are labelled by their template (`/v1/users/{id}`), gRPC calls by their method
//! path (`/shop.user.v1.UserService/GetUser`); anything unmatched is `unmatched`, so a
//! scanner cannot blow up the label cardinality.

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request latency buckets, in seconds: fine below 10 ms where our targets are.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle, installing the global recorder on first use. `None`
/// only if another recorder was installed first.
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_duration_seconds".to_owned()), LATENCY_BUCKETS)
                .ok()?;
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            Some(handle)
        })
        .as_ref()
}

/// The text exposition of every metric.
pub fn render() -> String {
    handle().map(PrometheusHandle::render).unwrap_or_default()
}

/// Axum middleware: `http_requests_total` and `http_request_duration_seconds` per route.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = request.uri().path();
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    let route = match request.extensions().get::<MatchedPath>() {
        Some(_) if is_grpc => path.to_owned(),
        Some(matched) => matched.as_str().to_owned(),
        None => "unmatched".to_owned(),
    };
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let protocol = if is_grpc { "grpc" } else { "http" };
    let labels = [("route", route), ("method", method), ("status", status), ("protocol", protocol.to_owned())];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(started.elapsed().as_secs_f64());
    response
}
