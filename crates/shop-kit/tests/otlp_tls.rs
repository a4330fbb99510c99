//! OTLP export over TLS (`https://` endpoints, `OTEL_EXPORTER_OTLP_CERTIFICATE`), to the
//! testkit's OTLP/gRPC receiver serving TLS only with a certificate for `localhost` from a CA
//! made for the test.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use std::time::Duration;

use opentelemetry::trace::{Tracer as _, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use shop_kit::{
    config::{TelemetryConfig, Vars},
    telemetry,
};
use shop_testkit::OtlpReceiver;

fn config(settings: &[(&str, &str)]) -> Result<TelemetryConfig, String> {
    TelemetryConfig::from_vars(&Vars::from_pairs(settings.iter().copied()), "otlp-tls-test")
        .map_err(|error| error.to_string())
}

/// Exports one span named `name` through the exporter `config` makes, and flushes.
async fn export_one(config: &TelemetryConfig, name: &'static str) {
    let exporter = telemetry::otlp_exporter(config).unwrap().expect("an exporter for the endpoint");
    let provider = SdkTracerProvider::builder().with_batch_exporter(exporter).build();
    provider.tracer("otlp-tls-test").in_span(name, |_| {});
    // The flush blocks until the export is answered (or fails); the runtime's other worker
    // drives the gRPC channel meanwhile.
    tokio::task::spawn_blocking(move || {
        let _ = provider.force_flush();
        let _ = provider.shutdown();
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_only_through_the_ca_that_vouches_for_it() {
    let receiver = OtlpReceiver::start_tls().await;
    let endpoint = receiver.endpoint();
    assert!(endpoint.starts_with("https://localhost:"), "{endpoint}");
    let ca = receiver.ca_file().unwrap().to_str().unwrap().to_owned();

    let trusted =
        config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)]).unwrap();
    export_one(&trusted, "through-the-ca").await;
    // Without the CA, the public roots do not vouch for the test's certificate.
    let public_roots = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)]).unwrap();
    export_one(&public_roots, "through-the-public-roots").await;
    // In plaintext, a TLS-only collector answers nothing.
    let plain = endpoint.replacen("https://", "http://", 1);
    export_one(&config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &plain)]).unwrap(), "in-plaintext").await;

    let mut names = Vec::new();
    for _ in 0..50 {
        names = receiver.spans().into_iter().map(|span| span.name).collect::<Vec<_>>();
        if !names.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(names, ["through-the-ca"], "only the export whose CA vouches for the collector arrived");

    let refused = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &plain), ("OTEL_EXPORTER_OTLP_CERTIFICATE", &ca)]);
    assert!(refused.unwrap_err().contains("https://"), "a CA with a plaintext endpoint would verify nothing");
}
