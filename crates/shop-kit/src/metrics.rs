//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`, and the RED
//! middleware that counts and times every request by route, method and status.
//!
//! Routes are labelled by their template (`/v1/users/{id}`), gRPC calls by their method
//! path (`/shop.user.v1.UserService/GetUser`) when it is a method some service defines;
//! anything else is `unmatched`, and a method other than the standard ones is `other`, so
//! a scanner cannot grow the number of series (each costs memory until the process ends).

use std::{
    collections::HashSet,
    sync::{LazyLock, OnceLock},
    time::Instant,
};

use prost::Message as _;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use metrics::{Label, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Request latency buckets, in seconds: fine below 10 ms where our targets are.
const LATENCY_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Every gRPC method a shop service can serve (`/package.Service/Method`): those of the
/// shop's protos, health and reflection.
static GRPC_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut methods = HashSet::new();
    for encoded in [shop_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else { continue };
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!("/{}.{}/{}", file.package(), service.name(), method.name()));
                }
            }
        }
    }
    for version in ["v1", "v1alpha"] {
        methods.insert(format!("/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"));
    }
    methods
});

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
///
/// Labels are built once per request and shared by both series: static strings for the
/// method, status and protocol, one shared copy of the route (this runs on every request,
/// and the label strings were a good part of its allocations).
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let is_grpc = request
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/grpc"));
    let route: SharedString = match request.extensions().get::<MatchedPath>() {
        Some(_) if is_grpc && GRPC_METHODS.contains(request.uri().path()) => {
            SharedString::from(std::sync::Arc::<str>::from(request.uri().path()))
        }
        Some(_) if is_grpc => SharedString::const_str("unmatched"),
        Some(matched) => SharedString::from(std::sync::Arc::<str>::from(matched.as_str())),
        None => SharedString::const_str("unmatched"),
    };
    let method = method_label(request.method());
    let response = next.run(request).await;
    let mut labels = vec![
        Label::new("route", route),
        Label::new("method", method),
        Label::new("status", status_label(response.status())),
        Label::from_static_parts("protocol", if is_grpc { "grpc" } else { "http" }),
    ];
    if is_grpc {
        labels.push(Label::from_static_parts("grpc_status", grpc_status_label(&response)));
    }
    metrics::counter!("http_requests_total", labels.clone()).increment(1);
    metrics::histogram!("http_request_duration_seconds", labels).record(started.elapsed().as_secs_f64());
    response
}

/// The gRPC outcome of a response, by its code's name: tonic answers every error (a
/// handler's, an unknown method's) with HTTP 200 and `grpc-status` in the headers
/// (trailers-only), and a success with `grpc-status: 0` in the trailers, which a middleware
/// does not see: a 2xx without the header is `OK`.
fn grpc_status_label(response: &Response) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    match response.headers().get("grpc-status") {
        None if response.status().is_success() => "OK",
        // Not a gRPC answer (a 404 from the router, a 503 from the timeout layer): the code a
        // gRPC client reports for that HTTP status (grpc/doc/http-grpc-status-mapping.md).
        None => match response.status().as_u16() {
            400 => "INTERNAL",
            401 => "UNAUTHENTICATED",
            403 => "PERMISSION_DENIED",
            404 => "UNIMPLEMENTED",
            429 | 502..=504 => "UNAVAILABLE",
            _ => "UNKNOWN",
        },
        Some(value) => value
            .to_str()
            .ok()
            .and_then(|text| text.parse::<usize>().ok())
            .and_then(|code| NAMES.get(code).copied())
            .unwrap_or("UNKNOWN"),
    }
}

fn method_label(method: &http::Method) -> SharedString {
    let name = match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::PATCH => "PATCH",
        http::Method::DELETE => "DELETE",
        http::Method::HEAD => "HEAD",
        http::Method::OPTIONS => "OPTIONS",
        http::Method::CONNECT => "CONNECT",
        http::Method::TRACE => "TRACE",
        // Any token is a method in HTTP: a made-up one would be a new series each time.
        _ => "other",
    };
    SharedString::const_str(name)
}

fn status_label(status: http::StatusCode) -> SharedString {
    const COMMON: [(u16, &str); 16] = [
        (200, "200"),
        (201, "201"),
        (204, "204"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (503, "503"),
        (504, "504"),
    ];
    match COMMON.iter().find(|(code, _)| *code == status.as_u16()) {
        Some((_, text)) => SharedString::const_str(text),
        None => SharedString::from(status.as_u16().to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_codes_and_methods_as_text() {
        for code in [200_u16, 201, 302, 404, 418, 503, 599] {
            let status = http::StatusCode::from_u16(code).unwrap();
            assert_eq!(status_label(status).as_ref(), code.to_string(), "status {code}");
        }
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "CONNECT", "TRACE"] {
            let parsed = http::Method::from_bytes(method.as_bytes()).unwrap();
            assert_eq!(method_label(&parsed).as_ref(), method);
        }
        for made_up in ["PROPFIND", "X1", "BREW"] {
            let parsed = http::Method::from_bytes(made_up.as_bytes()).unwrap();
            assert_eq!(method_label(&parsed).as_ref(), "other", "{made_up}");
        }
        assert!(GRPC_METHODS.contains("/shop.order.v1.OrderService/ShipOrder"));
        assert!(GRPC_METHODS.contains("/grpc.health.v1.Health/Check"));
        assert!(!GRPC_METHODS.contains("/grpc.health.v1.Health/x1"));
    }
}
