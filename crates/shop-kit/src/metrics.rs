//! Prometheus metrics: one process-wide recorder, rendered at `GET /metrics`, and the RED
//! middleware that counts and times every request by route, method and status.
//!
//! Every metric has HELP text and its unit in its name: shop-kit describes its own when the
//! recorder is installed, a service describes its own with [`describe`]. Each scrape also
//! reports the process (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! `process_open_fds`, `process_max_fds`, `process_threads`, `process_start_time_seconds`,
//! read from /proc, as the Prometheus client libraries name them) and `shop_build_info`
//! (1, labelled with the service, its version and the commit it was built from). Label
//! values are lower snake case, except the HTTP methods and gRPC codes, which keep the
//! spelling of their standards (`GET`, `NOT_FOUND`).
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
            describe_metrics(SHARED);
            Some(handle)
        })
        .as_ref()
}

/// What a metric is, for its `# TYPE` and `# HELP` lines.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric's name, kind and HELP text.
pub type Description = (&'static str, Kind, &'static str);

/// Describes a service's own metrics (HELP text), installing the recorder first so that the
/// descriptions are not lost.
pub fn describe(metrics: &[Description]) {
    if handle().is_some() {
        describe_metrics(metrics);
    }
}

fn describe_metrics(metrics: &[Description]) {
    for &(name, kind, help) in metrics {
        match kind {
            Kind::Counter => metrics::describe_counter!(name, help),
            Kind::Gauge => metrics::describe_gauge!(name, help),
            Kind::Histogram => metrics::describe_histogram!(name, help),
        }
    }
}

/// The metrics shop-kit records for every service.
const SHARED: &[Description] = &[
    (
        "http_requests_total",
        Kind::Counter,
        "Requests answered, by route template, method, HTTP status, protocol and gRPC status.",
    ),
    (
        "http_request_duration_seconds",
        Kind::Histogram,
        "Time from a request's arrival to its response's headers, in seconds.",
    ),
    (
        "readiness_check_passing",
        Kind::Gauge,
        "1 while a readiness check passes, 0 while it fails (required checks gate /readyz).",
    ),
    (
        "events_consumed_total",
        Kind::Counter,
        "Events a consumer finished with, by outcome (applied, duplicate, ignored, dead_lettered).",
    ),
    (
        "kafka_consumer_lag",
        Kind::Gauge,
        "Messages between a consumer group's committed offset and the partition's end, as the consumer sees it.",
    ),
    ("kafka_consumer_batch_events", Kind::Histogram, "Events a consumer applied in one database transaction."),
    (
        "kafka_consumer_rejoins_total",
        Kind::Counter,
        "Times the watchdog recreated a consumer whose group stopped assigning it partitions.",
    ),
    ("kafka_producer_replaced_total", Kind::Counter, "Times the publisher replaced a Kafka producer that had failed."),
    ("outbox_published_total", Kind::Counter, "Outbox rows the relay published to Kafka, by topic."),
    ("events_published_total", Kind::Counter, "Events published, by CloudEvents type."),
    ("outbox_backlog_events", Kind::Gauge, "Outbox rows not yet published."),
    (
        "outbox_oldest_event_age_seconds",
        Kind::Gauge,
        "Age of the oldest unpublished outbox row, in seconds (0 when none).",
    ),
    ("retention_deleted_rows_total", Kind::Counter, "Old rows pruned by retention, by table."),
    ("rate_limited_total", Kind::Counter, "Requests refused with 429 by a rate limit, by limit."),
    (
        "shop_build_info",
        Kind::Gauge,
        "Always 1; labelled with the service, its version and the commit it was built from.",
    ),
];

/// Records `shop_build_info{service, version, commit}`: the version is the crate's, the
/// commit `SHOP_BUILD_COMMIT` (the image sets it from the commit CI builds) or `unknown`.
pub fn record_build_info(service: &'static str, version: &'static str) {
    let commit = std::env::var("SHOP_BUILD_COMMIT")
        .ok()
        .filter(|commit| !commit.is_empty() && commit.len() <= 64 && commit.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "unknown".to_owned());
    metrics::gauge!("shop_build_info", "service" => service, "version" => version, "commit" => commit).set(1.0);
}

/// The text exposition of every metric, followed by the process's, read just now (written
/// here rather than through the recorder: CPU seconds are a fractional counter).
pub fn render() -> String {
    let Some(handle) = handle() else { return String::new() };
    let mut text = handle.render();
    if let Some(process) = process::sample() {
        process.write(&mut text);
    }
    text
}

/// The process's own numbers, from Linux's /proc (elsewhere there are none).
mod process {
    pub(super) struct Sample {
        pub(super) cpu_seconds: f64,
        pub(super) resident_bytes: u64,
        pub(super) open_fds: u64,
        pub(super) max_fds: u64,
        pub(super) threads: u64,
        pub(super) start_time_seconds: f64,
    }

    /// Clock ticks per second as Linux reports them to every process (`getconf CLK_TCK`,
    /// USER_HZ: 100 on every architecture Linux runs). The resident size is read in kB from
    /// `/proc/self/status`, so no page size is assumed (arm64 kernels may use 16 or 64 KiB).
    const TICKS_PER_SECOND: f64 = 100.0;

    impl Sample {
        /// Appends the six metrics in the text exposition format, with HELP and TYPE.
        pub(super) fn write(&self, text: &mut String) {
            use std::fmt::Write as _;
            let metrics: [(&str, &str, &str, f64); 6] = [
                (
                    "process_cpu_seconds_total",
                    "counter",
                    "User and system CPU time the process has used, in seconds.",
                    self.cpu_seconds,
                ),
                (
                    "process_resident_memory_bytes",
                    "gauge",
                    "Resident set size of the process, in bytes.",
                    self.resident_bytes as f64,
                ),
                ("process_open_fds", "gauge", "File descriptors the process has open.", self.open_fds as f64),
                ("process_max_fds", "gauge", "The process's limit on open file descriptors.", self.max_fds as f64),
                ("process_threads", "gauge", "Threads of the process.", self.threads as f64),
                (
                    "process_start_time_seconds",
                    "gauge",
                    "When the process started, in seconds since the Unix epoch.",
                    self.start_time_seconds,
                ),
            ];
            for (name, kind, help, value) in metrics {
                let _ = write!(text, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n\n");
            }
        }
    }

    pub(super) fn sample() -> Option<Sample> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // The command name (field 2) is in parentheses and may hold spaces: count after it.
        let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split_whitespace().collect();
        // Fields 14 and 15 (utime, stime), 20 (num_threads) and 22 (starttime), less 3.
        let number = |index: usize| fields.get(index).and_then(|field| field.parse::<u64>().ok());
        let cpu_ticks = number(11)? + number(12)?;
        let threads = number(17)?;
        let start_ticks = number(19)?;
        let resident_kib = std::fs::read_to_string("/proc/self/status").ok()?.lines().find_map(|line| {
            line.strip_prefix("VmRSS:").and_then(|value| value.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("btime ").and_then(|value| value.trim().parse::<u64>().ok()))?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
        let max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()?
            .lines()
            .find(|line| line.starts_with("Max open files"))
            .and_then(|line| line.split_whitespace().nth(3).and_then(|soft| soft.parse::<u64>().ok()))
            .unwrap_or(0);
        Some(Sample {
            cpu_seconds: cpu_ticks as f64 / TICKS_PER_SECOND,
            resident_bytes: resident_kib * 1024,
            open_fds,
            max_fds,
            threads,
            start_time_seconds: boot_time as f64 + start_ticks as f64 / TICKS_PER_SECOND,
        })
    }
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
