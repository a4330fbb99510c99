//! Logs and traces: a `tracing` subscriber (pretty or JSON), OpenTelemetry spans exported
//! over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace-context propagation.
//!
//! Spans always get OpenTelemetry trace ids, even with no collector configured, so the
//! `traceparent` of an incoming request is continued and handed on to outbound calls, and
//! every JSON log line inside a request carries its `trace_id`.

use anyhow::Context as _;
use opentelemetry::{
    global,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::LevelFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

use crate::config::{LogFormat, TelemetryConfig};

/// Keeps the tracer provider alive; flushes spans when dropped at the end of `main`.
#[must_use = "telemetry is flushed when the guard is dropped"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl TelemetryGuard {
    /// Flushes the spans not yet exported, for at most `timeout` (the OTLP export blocks
    /// while the collector is away); `false` when it did not finish in time.
    pub async fn flush_within(mut self, timeout: std::time::Duration) -> bool {
        let Some(provider) = self.provider.take() else { return true };
        crate::service::blocking_within(timeout, move || {
            if let Err(error) = provider.shutdown() {
                tracing::warn!(%error, "could not flush telemetry");
            }
        })
        .await
        .is_some()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "could not flush telemetry");
        }
    }
}

/// Installs the global subscriber and propagator. Call once, at start-up.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder().with_service_name(config.service_name.clone()).build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    if let Some(endpoint) = &config.otlp_endpoint {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .context("configuration: OTEL_EXPORTER_OTLP_ENDPOINT cannot be used")?;
        provider = provider.with_batch_exporter(exporter);
    }
    let provider = provider.build();
    global::set_tracer_provider(provider.clone());
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer(config.service_name.clone()));

    // The log filter (RUST_LOG) chooses what is printed only; spans reach OpenTelemetry at
    // INFO whatever it says, so `RUST_LOG=warn` does not break trace propagation.
    let filter = EnvFilter::try_new(&config.log_filter)
        .with_context(|| format!("configuration: RUST_LOG has an invalid value {:?}", config.log_filter))?;
    let registry = tracing_subscriber::registry().with(otel.with_filter(LevelFilter::INFO));
    let installed = match config.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .with_filter(filter),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(tracing_subscriber::fmt::layer().compact().with_filter(filter)).try_init(),
    };
    installed.context("a global tracing subscriber is already installed")?;
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(otlp.endpoint = %endpoint, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { provider: Some(provider) })
}

/// Makes `span` a child of the trace context carried in `headers` (W3C `traceparent`).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled, in which case there is nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// Writes the current span's trace context into outbound `headers`.
pub fn inject_current(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut HeaderInjector(headers)));
}

/// The hex trace id of `span`, when it has one.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context.is_valid().then(|| span_context.trace_id().to_string())
}
