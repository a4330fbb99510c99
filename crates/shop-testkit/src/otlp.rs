//! An OTLP/gRPC trace receiver: what a collector would get from the services, kept in
//! memory for a test to read. It speaks the collector's real protocol
//! (`opentelemetry.proto.collector.trace.v1.TraceService/Export` over HTTP/2), so the
//! services export to it exactly as they would to an OpenTelemetry Collector.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::{AnyValue, KeyValue, any_value},
};
use tokio_util::sync::CancellationToken;

/// One span as received, its ids in lower-case hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedSpan {
    /// The exporting service's `service.name`.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    /// `SPAN_KIND_SERVER`, `SPAN_KIND_CONSUMER`, ...
    pub kind: String,
    /// The string, integer and boolean attributes, as text.
    pub attributes: Vec<(String, String)>,
}

impl ReceivedSpan {
    /// The value of attribute `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.iter().find(|(name, _)| name == key).map(|(_, value)| value.as_str())
    }
}

/// The receiver, listening on a free port until dropped.
pub struct OtlpReceiver {
    address: SocketAddr,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
    stop: CancellationToken,
    /// With TLS: the CA that signed its certificate (for `localhost`), as a PEM file.
    ca_file: Option<std::path::PathBuf>,
}

impl OtlpReceiver {
    /// Plain HTTP/2.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// Over TLS only, with a certificate for `localhost` and `127.0.0.1` from a CA made here
    /// ([`OtlpReceiver::ca_file`]).
    pub async fn start_tls() -> Self {
        let certificate = crate::tls::LocalhostCertificate::generate();
        let ca_file = certificate.write_ca("shop-otlp-ca");
        let identity = tonic::transport::Identity::from_pem(&certificate.cert_pem, &certificate.key_pem);
        Self::serve(Some((identity, ca_file))).await
    }

    async fn serve(tls: Option<(tonic::transport::Identity, std::path::PathBuf)>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("cannot bind the OTLP receiver");
        let address = listener.local_addr().expect("the receiver's address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let service = TraceServiceServer::new(Collector { spans: Arc::clone(&spans) });
        let stopped = stop.clone();
        let (identity, ca_file) = tls.unzip();
        let mut builder = tonic::transport::Server::builder();
        if let Some(identity) = identity {
            builder = builder
                .tls_config(tonic::transport::ServerTlsConfig::new().identity(identity))
                .expect("the receiver's TLS settings");
        }
        tokio::spawn(async move {
            let served = builder
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(listener),
                    stopped.cancelled(),
                )
                .await;
            if let Err(error) = served {
                eprintln!("the OTLP receiver stopped: {error}");
            }
        });
        Self { address, spans, stop, ca_file }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` for the services: `https://localhost:<port>` with TLS.
    pub fn endpoint(&self) -> String {
        match self.ca_file {
            Some(_) => format!("https://localhost:{}", self.address.port()),
            None => format!("http://{}", self.address),
        }
    }

    /// `OTEL_EXPORTER_OTLP_CERTIFICATE` for a TLS receiver.
    pub fn ca_file(&self) -> Option<&std::path::Path> {
        self.ca_file.as_deref()
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("the receiver's spans").clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(ca_file) = &self.ca_file {
            let _ = std::fs::remove_file(ca_file);
        }
    }
}

struct Collector {
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut received = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans.resource.map(|resource| resource.attributes).unwrap_or_default();
            let service = attributes(&resource)
                .into_iter()
                .find_map(|(key, value)| (key == "service.name").then_some(value))
                .unwrap_or_default();
            for span in resource_spans.scope_spans.into_iter().flat_map(|scope| scope.spans) {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    kind: opentelemetry_proto::tonic::trace::v1::span::SpanKind::try_from(span.kind)
                        .map_or_else(|_| span.kind.to_string(), |kind| kind.as_str_name().to_owned()),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: (!span.parent_span_id.is_empty()).then(|| hex(&span.parent_span_id)),
                    attributes: attributes(&span.attributes),
                    name: span.name,
                });
            }
        }
        self.spans.lock().map_err(|_| tonic::Status::internal("poisoned"))?.extend(received);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn attributes(values: &[KeyValue]) -> Vec<(String, String)> {
    values
        .iter()
        .filter_map(|pair| {
            let value = match pair.value.as_ref().and_then(|AnyValue { value }| value.as_ref())? {
                any_value::Value::StringValue(text) => text.clone(),
                any_value::Value::IntValue(number) => number.to_string(),
                any_value::Value::BoolValue(flag) => flag.to_string(),
                any_value::Value::DoubleValue(number) => number.to_string(),
                _ => return None,
            };
            Some((pair.key.clone(), value))
        })
        .collect()
}
