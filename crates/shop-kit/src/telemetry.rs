//! Logs and traces: a `tracing` subscriber (pretty or JSON), OpenTelemetry spans exported
//! over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, and W3C trace-context propagation.
//!
//! Spans always get OpenTelemetry trace ids, even with no collector configured, so the
//! `traceparent` of an incoming request or event is continued and handed on to outbound
//! calls and published events, and every JSON log line written while handling a request
//! or an event carries `trace_id` and `span_id` at its top level (those of the innermost
//! span that has them: the request's, the consumed event's, or one opened inside).

use anyhow::Context as _;
use opentelemetry::{
    TraceId, global,
    trace::{TraceContextExt as _, TracerProvider as _},
};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::LevelFilter,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt as _,
    registry::LookupSpan,
    util::SubscriberInitExt as _,
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

/// The OTLP/gRPC span exporter `config` asks for, if any: over TLS for an `https://` endpoint,
/// checking the collector's certificate for the endpoint's host against
/// `OTEL_EXPORTER_OTLP_CERTIFICATE` or, without it, the public webpki roots.
pub fn otlp_exporter(config: &TelemetryConfig) -> anyhow::Result<Option<opentelemetry_otlp::SpanExporter>> {
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    let Some(endpoint) = &config.otlp_endpoint else { return Ok(None) };
    let mut builder = opentelemetry_otlp::SpanExporter::builder().with_tonic().with_endpoint(endpoint.clone());
    if endpoint.starts_with("https://") {
        let tls = tonic::transport::ClientTlsConfig::new();
        let tls = match &config.otlp_ca {
            Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => tls.with_webpki_roots(),
        };
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder.build().context("configuration: OTEL_EXPORTER_OTLP_ENDPOINT cannot be used")?;
    Ok(Some(exporter))
}

/// Installs the global subscriber and propagator. Call once, at start-up.
pub fn init(config: &TelemetryConfig) -> anyhow::Result<TelemetryGuard> {
    global::set_text_map_propagator(TraceContextPropagator::new());
    let resource = Resource::builder().with_service_name(config.service_name.clone()).build();
    let mut provider = SdkTracerProvider::builder().with_resource(resource);
    if let Some(exporter) = otlp_exporter(config)? {
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
        LogFormat::Json => registry.with(json_layer(std::io::stdout).with_filter(LogFilter(filter))).try_init(),
        LogFormat::Pretty => {
            registry.with(tracing_subscriber::fmt::layer().compact().with_filter(LogFilter(filter))).try_init()
        }
    };
    installed.context("a global tracing subscriber is already installed")?;
    if let Some(endpoint) = &config.otlp_endpoint {
        tracing::info!(otlp.endpoint = %endpoint, "exporting traces over OTLP");
    }
    Ok(TelemetryGuard { provider: Some(provider) })
}

/// The log layer's filter: RUST_LOG for events, but every span at INFO or above whatever it
/// says, so that a line the filter lets through (a WARN under `RUST_LOG=warn`) still finds the
/// request or event span around it, and with it the trace ids. Spans are not lines: seeing
/// them prints nothing.
struct LogFilter(EnvFilter);

fn span_always_seen(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.is_span() && *metadata.level() <= tracing::Level::INFO
}

impl<S> tracing_subscriber::layer::Filter<S> for LogFilter
where
    S: tracing::Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn enabled(&self, metadata: &tracing::Metadata<'_>, context: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        span_always_seen(metadata) || tracing_subscriber::layer::Filter::enabled(&self.0, metadata, context)
    }

    fn callsite_enabled(&self, metadata: &'static tracing::Metadata<'static>) -> tracing::subscriber::Interest {
        if span_always_seen(metadata) {
            return tracing::subscriber::Interest::always();
        }
        tracing_subscriber::layer::Filter::<S>::callsite_enabled(&self.0, metadata)
    }

    fn event_enabled(&self, event: &tracing::Event<'_>, context: &tracing_subscriber::layer::Context<'_, S>) -> bool {
        tracing_subscriber::layer::Filter::event_enabled(&self.0, event, context)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        let hint = tracing_subscriber::layer::Filter::<S>::max_level_hint(&self.0);
        hint.map(|level| level.max(LevelFilter::INFO))
    }

    fn on_new_span(
        &self,
        attributes: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        tracing_subscriber::layer::Filter::on_new_span(&self.0, attributes, id, context);
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        context: tracing_subscriber::layer::Context<'_, S>,
    ) {
        tracing_subscriber::layer::Filter::on_record(&self.0, id, values, context);
    }

    fn on_enter(&self, id: &tracing::span::Id, context: tracing_subscriber::layer::Context<'_, S>) {
        tracing_subscriber::layer::Filter::on_enter(&self.0, id, context);
    }

    fn on_exit(&self, id: &tracing::span::Id, context: tracing_subscriber::layer::Context<'_, S>) {
        tracing_subscriber::layer::Filter::on_exit(&self.0, id, context);
    }

    fn on_close(&self, id: tracing::span::Id, context: tracing_subscriber::layer::Context<'_, S>) {
        tracing_subscriber::layer::Filter::on_close(&self.0, id, context);
    }
}

/// The JSON log layer: one object per line, the event's fields at the top level, the
/// current span under `span`, and the trace ids (see [`WithTraceIds`]).
fn json_layer<S, W>(writer: W) -> impl tracing_subscriber::Layer<S>
where
    S: tracing::Subscriber + for<'lookup> LookupSpan<'lookup>,
    W: for<'writer> tracing_subscriber::fmt::MakeWriter<'writer> + 'static,
{
    tracing_subscriber::fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .map_event_format(WithTraceIds)
        .with_writer(writer)
}

/// A JSON event format with the OpenTelemetry ids of the event's span added at the top
/// level: `{"timestamp":…,"level":…,"message":…,…,"trace_id":"<32 hex>","span_id":"<16 hex>"}`.
/// The ids are those of the innermost span in the event's scope that OpenTelemetry knows
/// (spans below INFO are not exported, so a DEBUG span inside a request reports the
/// request's). A line outside any span has neither.
struct WithTraceIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: tracing::Subscriber + for<'lookup> LookupSpan<'lookup>,
    N: for<'writer> FormatFields<'writer> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        context: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.0.format_event(context, Writer::new(&mut line), event)?;
        let ids = context.event_scope().and_then(|scope| {
            scope.into_iter().find_map(|span| {
                let extensions = span.extensions();
                let data = extensions.get::<tracing_opentelemetry::OtelData>()?;
                Some((data.trace_id()?, data.span_id()?))
            })
        });
        // The JSON format writes one object per line; the ids go in before its closing brace.
        match (ids, line.strip_suffix("}\n")) {
            (Some((trace_id, span_id)), Some(object)) if trace_id != TraceId::INVALID => {
                writeln!(writer, "{object},\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\"}}")
            }
            _ => writer.write_str(&line),
        }
    }
}

/// Makes `span` a child of the trace context carried in `headers` (W3C `traceparent`).
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)));
    if parent.span().span_context().is_valid() {
        // Fails only when the span is disabled, in which case there is nothing to continue.
        let _ = span.set_parent(parent);
    }
}

/// A trace context in its W3C text form, to keep with work that another task picks up
/// later (an outbox row, a payment the worker charges, a notification it sends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredContext {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl StoredContext {
    /// The current span's context.
    pub fn current() -> Self {
        let mut fields = std::collections::HashMap::new();
        let context = tracing::Span::current().context();
        global::get_text_map_propagator(|propagator| propagator.inject_context(&context, &mut fields));
        Self { traceparent: fields.remove("traceparent"), tracestate: fields.remove("tracestate") }
    }

    /// Makes `span` a child of this context; nothing when it holds none (or an invalid one).
    pub fn continue_in(&self, span: &tracing::Span) {
        let Some(traceparent) = &self.traceparent else { return };
        let mut fields = std::collections::HashMap::from([("traceparent".to_owned(), traceparent.clone())]);
        if let Some(tracestate) = &self.tracestate {
            fields.insert("tracestate".to_owned(), tracestate.clone());
        }
        continue_from(span, &fields);
    }
}

/// Makes `span` a child of the trace context in `fields` (message headers: `traceparent`,
/// `tracestate`); nothing when they carry none.
pub fn continue_from(span: &tracing::Span, fields: &std::collections::HashMap<String, String>) {
    let parent = global::get_text_map_propagator(|propagator| propagator.extract(fields));
    if parent.span().span_context().is_valid() {
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer into a shared buffer, for reading what the layer wrote.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_inside_a_span_has_the_trace_and_span_ids_at_the_top_level() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")).with_filter(LevelFilter::INFO))
            .with(json_layer(move || writer.clone()).with_filter(LevelFilter::DEBUG));
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
            let request = tracing::info_span!("request");
            continue_trace(&request, &headers);
            request.in_scope(|| {
                tracing::info!("in the request");
                // A DEBUG span is not exported: its lines report the request's span.
                tracing::debug_span!("query").in_scope(|| tracing::info!("in a debug span"));
                tracing::info_span!("call").in_scope(|| tracing::warn!(attempt = 2, "in a child span"));
            });
            tracing::info!("outside any span");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        let line = |message: &str| lines.iter().find(|line| line["message"] == message).unwrap().clone();
        let (request, debug, child) = (line("in the request"), line("in a debug span"), line("in a child span"));
        for traced in [&request, &debug, &child] {
            assert_eq!(traced["trace_id"], trace_id, "{traced}");
            assert_eq!(traced["span_id"].as_str().unwrap().len(), 16, "{traced}");
        }
        assert_ne!(request["span_id"], "00f067aa0ba902b7", "the request's own span, not the caller's");
        assert_eq!(debug["span_id"], request["span_id"], "{debug}");
        assert_ne!(child["span_id"], request["span_id"], "{child}");
        assert_eq!(child["attempt"], 2, "the event's fields stay at the top level: {child}");
        let outside = line("outside any span");
        assert!(outside.get("trace_id").is_none() && outside.get("span_id").is_none(), "{outside}");
    }

    /// `RUST_LOG=warn`: INFO lines stay out, but a WARN line inside an INFO request span
    /// still carries the request's ids (the log layer's filter lets every INFO span in).
    /// Without `LogFilter` (a bare EnvFilter) the line has no ids: tried.
    #[test]
    fn a_log_filter_stricter_than_the_spans_keeps_the_ids() {
        global::set_text_map_propagator(TraceContextPropagator::new());
        let provider = SdkTracerProvider::builder().build();
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")).with_filter(LevelFilter::INFO))
            .with(json_layer(move || writer.clone()).with_filter(LogFilter(EnvFilter::new("warn"))));
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = http::HeaderMap::new();
            headers.insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
            let request = tracing::info_span!("request");
            continue_trace(&request, &headers);
            request.in_scope(|| {
                tracing::info!("filtered out");
                tracing::debug_span!("query").in_scope(|| tracing::warn!("a warning in a debug span"));
                tracing::warn!("a warning in the request");
            });
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(lines.len(), 2, "only the warnings: {text}");
        for line in &lines {
            assert_eq!(line["trace_id"], trace_id, "{text}");
            assert_eq!(line["span_id"].as_str().unwrap().len(), 16, "{text}");
        }
    }
}
