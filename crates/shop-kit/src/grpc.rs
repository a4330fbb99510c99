//! Outbound gRPC: channels with deadlines, and the caller's trace context and token
//! carried in the request metadata.

use std::time::Duration;

use opentelemetry::propagation::Injector;
use tonic::{
    metadata::{MetadataKey, MetadataMap, MetadataValue},
    transport::{Channel, Endpoint},
};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// A lazily connecting channel to `url` whose every call carries `deadline`.
pub fn channel(url: &str, deadline: Duration) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(url.to_owned())
        .map_err(|error| anyhow::anyhow!("{url:?} is not a valid gRPC URL: {error}"))?
        .connect_timeout(deadline.min(Duration::from_secs(2)))
        .timeout(deadline)
        .tcp_nodelay(true);
    Ok(endpoint.connect_lazy())
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_str()))
        {
            self.0.insert(key, value);
        }
    }
}

/// The signature of [`propagate_trace`] as a tonic interceptor.
pub type TraceInterceptor = fn(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status>;

/// A channel to another service of the platform: each call carries a deadline, the current
/// trace, and this service's own token for the callee (ADR 0012).
pub type Outbound =
    tonic::service::interceptor::InterceptedService<crate::auth::ServiceAuth<Channel>, TraceInterceptor>;

/// The [`Outbound`] channel to `callee` at `url`.
pub fn outbound(
    url: &str,
    deadline: Duration,
    tokens: &crate::auth::ServiceTokens,
    callee: &'static str,
) -> anyhow::Result<Outbound> {
    let authorized = crate::auth::ServiceAuth::new(channel(url, deadline)?, tokens.clone(), callee);
    Ok(tonic::service::interceptor::InterceptedService::new(authorized, propagate_trace as TraceInterceptor))
}

/// A client interceptor that writes the current span's W3C trace context into the request.
pub fn propagate_trace(mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(request.metadata_mut()));
    });
    Ok(request)
}

/// Puts `Authorization: Bearer <token>` on an outbound request (a client's own call; calls
/// between services carry the service's token through [`outbound`] instead).
pub fn with_bearer<T>(mut request: tonic::Request<T>, token: &str) -> tonic::Request<T> {
    if let Ok(value) = MetadataValue::try_from(format!("Bearer {token}")) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Names the customer a service's outbound call is made for (`shop-acting-for`), so the callee
/// can record who the work was for; the call itself is authorized by the service's own token.
pub fn acting_for<T>(mut request: tonic::Request<T>, user_id: uuid::Uuid) -> tonic::Request<T> {
    if let Ok(value) = MetadataValue::try_from(user_id.to_string()) {
        request.metadata_mut().insert(crate::auth::service::ACTING_FOR, value);
    }
    request
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_calls_carry_the_current_trace_and_the_token() {
        static GUARD: std::sync::OnceLock<Option<crate::telemetry::TelemetryGuard>> = std::sync::OnceLock::new();
        GUARD.get_or_init(|| {
            let config = crate::config::TelemetryConfig {
                service_name: "test".into(),
                log_format: crate::config::LogFormat::Pretty,
                log_filter: "off".into(),
                otlp_endpoint: None,
                otlp_ca: None,
            };
            crate::telemetry::init(&config).ok()
        });
        let mut incoming = http::HeaderMap::new();
        let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
        incoming.insert("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01").parse().unwrap());
        let span = tracing::info_span!("handler");
        crate::telemetry::continue_trace(&span, &incoming);
        let outbound = span.in_scope(|| propagate_trace(tonic::Request::new(()))).unwrap();
        let traceparent = outbound.metadata().get("traceparent").unwrap().to_str().unwrap().to_owned();
        assert!(traceparent.starts_with(&format!("00-{trace_id}-")), "{traceparent}");
        assert!(!traceparent.contains("00f067aa0ba902b7"), "the outbound call is a child span: {traceparent}");

        let with_token = with_bearer(tonic::Request::new(()), "abc");
        assert_eq!(with_token.metadata().get("authorization").unwrap(), "Bearer abc");
    }
}
