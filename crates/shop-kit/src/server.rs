//! The server every service runs: REST (axum) and gRPC (tonic) on one port.
//!
//! [`Server`] collects a service's REST router, gRPC services, readiness checks and OpenAPI
//! document; [`Server::bind`] binds (port 0 in tests) and [`BoundServer::run`] serves until
//! the [`CancellationToken`] is cancelled, then drains in-flight requests for at most the
//! configured grace period. Every server also answers:
//!
//! - `GET /healthz` (alive; depends on nothing else), `GET /readyz` (503 when a required
//!   dependency fails, 200 `degraded` when an optional one does; each check's name, state and
//!   whether it is required, never an error text; only the status with `READYZ_DETAILS=false`),
//!   `GET /metrics` (Prometheus; on `METRICS_LISTEN_ADDR` alone when that is set, as the chart
//!   does, so the public port never serves it), `GET /openapi.json`;
//! - `grpc.health.v1.Health` and gRPC reflection (`v1` and `v1alpha`), so grpcurl, k6 and
//!   Postman can discover the API (`GRPC_REFLECTION=false` turns reflection off, as prod does).
//!
//! Every request gets an `x-request-id`, a span that continues the caller's W3C trace (its
//! id is returned as `x-trace-id`), RED metrics, a timeout and a body limit; a panic in a
//! handler becomes an opaque 500, never a dropped connection.

use std::{
    convert::Infallible,
    future::{Future, IntoFuture as _},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    Json, Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Request},
    http::{HeaderName, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use futures::future::BoxFuture;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic_health::ServingStatus;
use tower::{BoxError, ServiceBuilder};
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

pub use crate::client_ip::ClientIp;
pub use crate::openapi::BearerAuth;
use crate::{config::HttpConfig, error::Problem, telemetry};

/// How long one readiness check may take before it counts as failing.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a failing dependency makes the service unready or only degraded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Criticality {
    /// Failing: `/readyz` answers 503 and the pod takes no traffic.
    Required,
    /// Failing: `/readyz` still answers 200 but reports `degraded` (a cache, say).
    Optional,
}

type Probe = Arc<dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync>;

/// One dependency that `/readyz` checks.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    criticality: Criticality,
    probe: Probe,
}

impl Check {
    pub fn new<F, Fut>(name: &'static str, criticality: Criticality, probe: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self { name, criticality, probe: Arc::new(move || Box::pin(probe())) }
    }

    /// Postgres answers `SELECT 1`.
    pub fn postgres(pool: sqlx::PgPool) -> Self {
        Self::new("postgres", Criticality::Required, move || {
            let pool = pool.clone();
            async move { sqlx::query("SELECT 1").execute(&pool).await.map(drop).map_err(|error| error.to_string()) }
        })
    }

    /// Redis answers `PING`.
    pub fn redis(connection: redis::aio::ConnectionManager, criticality: Criticality) -> Self {
        Self::new("redis", criticality, move || {
            let mut connection = connection.clone();
            async move {
                redis::cmd("PING").query_async::<String>(&mut connection).await.map(drop).map_err(|e| e.to_string())
            }
        })
    }
}

impl Check {
    /// The brokers answer a metadata request for `topic`, one of the service's own: asking
    /// for every topic would cost a response the size of the cluster on every probe (40 ms
    /// against a tansu holding 1,600 topics, 3 ms for one).
    ///
    /// Optional: while the brokers are away a service still takes requests (the events they
    /// cause wait in its outbox) and its consumers catch up when the brokers return, so a
    /// broker outage makes every service degraded, never unready. Were it required, a broker
    /// blip would take every pod out of its Service at once.
    pub fn kafka(publisher: crate::events::Publisher, topic: impl Into<String>) -> Self {
        let topic: Arc<str> = topic.into().into();
        Self::new("kafka", Criticality::Optional, move || {
            let publisher = publisher.clone();
            let topic = Arc::clone(&topic);
            async move {
                tokio::task::spawn_blocking(move || {
                    use rdkafka::producer::Producer as _;
                    publisher
                        .current()
                        .map_err(|error| format!("{error:#}"))?
                        .client()
                        .fetch_metadata(Some(&topic), Duration::from_secs(1))
                        .map(drop)
                        .map_err(|error| error.to_string())
                })
                .await
                .map_err(|error| error.to_string())?
            }
        })
    }
}

/// A service's server, before it binds.
pub struct Server {
    name: &'static str,
    config: HttpConfig,
    rest: Router,
    grpc: tonic::service::Routes,
    grpc_names: Vec<&'static str>,
    checks: Vec<Check>,
    openapi: serde_json::Value,
}

impl Server {
    pub fn new(name: &'static str, config: HttpConfig) -> Self {
        Self {
            name,
            config,
            rest: Router::new(),
            grpc: tonic::service::Routes::default(),
            grpc_names: Vec::new(),
            checks: Vec::new(),
            openapi: json!({}),
        }
    }

    /// Adds REST routes (with their state already applied).
    #[must_use]
    pub fn rest(mut self, router: Router) -> Self {
        self.rest = self.rest.merge(router);
        self
    }

    /// Adds a gRPC service; the health service reports it by name.
    #[must_use]
    pub fn grpc<S>(mut self, service: S) -> Self
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        self.grpc = self.grpc.add_service(service);
        self.grpc_names.push(S::NAME);
        self
    }

    /// Adds a dependency for `/readyz`.
    #[must_use]
    pub fn check(mut self, check: Check) -> Self {
        self.checks.push(check);
        self
    }

    /// The service's REST API: its routes, and the OpenAPI document generated from them with
    /// the shared answers added ([`crate::openapi`]), served at `/openapi.json`.
    #[must_use]
    pub fn api(self, api: utoipa_axum::router::OpenApiRouter) -> Self {
        let (router, document) = crate::openapi::split(api);
        self.rest(router).openapi(&document)
    }

    /// The OpenAPI document served at `/openapi.json`.
    #[must_use]
    pub fn openapi(mut self, document: &utoipa::openapi::OpenApi) -> Self {
        self.openapi = serde_json::to_value(document).unwrap_or_else(|_| json!({}));
        self
    }

    /// Binds the listener (use port 0 for an ephemeral port) and assembles the router.
    pub async fn bind(self) -> anyhow::Result<BoundServer> {
        let listener = TcpListener::bind(self.config.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", self.config.listen_addr))?;
        let local_addr = listener.local_addr().context("the listener has no local address")?;
        // Install the recorder now, so requests count from the first one on.
        if crate::metrics::handle().is_none() {
            tracing::warn!("another metrics recorder is installed; /metrics will be empty");
        }
        crate::metrics::record_build_info(self.name, env!("CARGO_PKG_VERSION"));

        let (health, health_service) = tonic_health::server::health_reporter();
        for name in &self.grpc_names {
            health.set_service_status(*name, ServingStatus::Serving).await;
        }
        // Advertise only what this server serves: the descriptor set holds every Shop service.
        let reflection = || {
            let mut builder = tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(shop_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name("grpc.health.v1.Health");
            for name in &self.grpc_names {
                builder = builder.with_service_name(*name);
            }
            builder
        };
        let reflection_v1 = reflection()
            .with_service_name("grpc.reflection.v1.ServerReflection")
            .build_v1()
            .context("cannot build gRPC reflection (v1)")?;
        let reflection_v1alpha = reflection()
            .with_service_name("grpc.reflection.v1alpha.ServerReflection")
            .build_v1alpha()
            .context("cannot build gRPC reflection (v1alpha)")?;
        let grpc = self.grpc.add_service(health_service);
        let grpc = if self.config.grpc_reflection {
            grpc.add_service(reflection_v1).add_service(reflection_v1alpha)
        } else {
            grpc
        };
        let metrics_listener = match self.config.metrics_listen_addr {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .with_context(|| format!("cannot listen on METRICS_LISTEN_ADDR {address}"))?,
            ),
            None => None,
        };

        let stopping = CancellationToken::new();
        let router =
            assemble(self.rest, grpc.into_axum_router(), self.checks, self.openapi, &self.config, stopping.clone());
        Ok(BoundServer {
            name: self.name,
            listener,
            local_addr,
            metrics_listener,
            router,
            health,
            config: self.config,
            stopping,
        })
    }
}

/// A bound server, ready to run.
pub struct BoundServer {
    name: &'static str,
    listener: TcpListener,
    local_addr: SocketAddr,
    /// `METRICS_LISTEN_ADDR`'s listener, serving `/metrics` alone.
    metrics_listener: Option<TcpListener>,
    router: Router,
    health: tonic_health::server::HealthReporter,
    config: HttpConfig,
    /// Cancelled once the server stops: `/readyz` then answers 503 `stopping`.
    stopping: CancellationToken,
}

impl BoundServer {
    /// The bound address (the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Where `/metrics` is served when `METRICS_LISTEN_ADDR` is set (its real port).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|listener| listener.local_addr().ok())
    }

    /// The server's settings.
    pub fn config(&self) -> &HttpConfig {
        &self.config
    }

    /// Serves until `shutdown` is cancelled, then drains in-flight requests for at most
    /// the configured grace period. From the signal on, `/readyz` answers 503 and the gRPC
    /// health service `NOT_SERVING`, so a load balancer that still routes here drains it.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Self { name, listener, local_addr, metrics_listener, router, health, config, stopping } = self;
        let metrics_stop = CancellationToken::new();
        let _stop_metrics = metrics_stop.clone().drop_guard();
        tracing::info!(service = name, address = %local_addr, "serving REST and gRPC");
        if let Some(metrics_listener) = metrics_listener {
            let address = metrics_listener.local_addr().ok();
            tracing::info!(service = name, address = ?address, "serving /metrics");
            let metrics = Router::new()
                .route("/metrics", get(|| async { crate::metrics::render() }))
                .fallback(|| async { Problem::not_found("route_not_found", "this port serves /metrics only") });
            let stop = metrics_stop.clone();
            // Scrapes go on while requests drain; the listener closes once the server has.
            tokio::spawn(async move {
                let serve = axum::serve(metrics_listener, metrics).with_graceful_shutdown(async move {
                    stop.cancelled().await;
                });
                if let Err(error) = serve.await {
                    tracing::error!(%error, "the metrics server failed");
                }
            });
        }
        let signal = shutdown.clone();
        let serve = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                signal.cancelled().await;
                stopping.cancel();
                health.set_service_status("", ServingStatus::NotServing).await;
                tracing::info!(service = name, "stopping: readiness answers 503, draining in-flight requests");
            });
        let mut serve = std::pin::pin!(serve.into_future());
        tokio::select! {
            result = &mut serve => return result.context("the server failed"),
            () = shutdown.cancelled() => {}
        }
        match tokio::time::timeout(config.shutdown_grace, serve).await {
            Ok(result) => result.context("the server failed while draining")?,
            Err(_) => {
                tracing::warn!(service = name, grace = ?config.shutdown_grace, "drain timed out; closing open requests")
            }
        }
        tracing::info!(service = name, "stopped serving");
        Ok(())
    }
}

fn assemble(
    rest: Router,
    grpc: Router,
    checks: Vec<Check>,
    openapi: serde_json::Value,
    config: &HttpConfig,
    stopping: CancellationToken,
) -> Router {
    let checks = Arc::new(checks);
    let openapi = Arc::new(openapi);
    let hops = config.trusted_proxy_hops;
    let proxy_header = config.trusted_proxy_header;
    let details = config.readyz_details;
    let mut platform = Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(move || readiness(Arc::clone(&checks), stopping.clone(), details)))
        .route("/openapi.json", get(move || std::future::ready(Json(openapi.as_ref().clone()))));
    if config.metrics_listen_addr.is_none() {
        platform = platform.route("/metrics", get(|| async { crate::metrics::render() }));
    }

    rest.merge(platform)
        .merge(grpc)
        .fallback(|| async { Problem::not_found("route_not_found", "no route matches this path") })
        .method_not_allowed_fallback(|| async {
            Problem::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method")
        })
        .layer(DefaultBodyLimit::max(config.body_limit_bytes))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(|_: BoxError| async {
                    Problem::unavailable("request_timeout", "the request took too long and was abandoned")
                }))
                .timeout(config.request_timeout),
        )
        .layer(middleware::from_fn(crate::metrics::track))
        .layer(middleware::from_fn(move |request, next| crate::client_ip::record(proxy_header, hops, request, next)))
        .layer(middleware::from_fn(trace_id_header))
        .layer(TraceLayer::new_for_http().make_span_with(make_span))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            Problem::internal(&anyhow::anyhow!("a request handler panicked")).into_response()
        }))
        .layer(cors(&config.cors_allowed_origins))
}

/// CORS for the configured browser origins only; with none, no CORS headers at all (the
/// browser then refuses cross-origin calls). Preflights are answered here, before any route
/// or token check.
fn cors(origins: &[String]) -> tower::util::Either<CorsLayer, tower::layer::util::Identity> {
    let origins: Vec<HeaderValue> = origins.iter().filter_map(|origin| HeaderValue::from_str(origin).ok()).collect();
    if origins.is_empty() {
        return tower::util::Either::Right(tower::layer::util::Identity::new());
    }
    let named = |names: &[&'static str]| names.iter().map(|name| HeaderName::from_static(name)).collect::<Vec<_>>();
    tower::util::Either::Left(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE])
            .allow_headers(named(&[
                "authorization",
                "content-type",
                "idempotency-key",
                "if-match",
                "if-none-match",
                "x-request-id",
                "traceparent",
            ]))
            .expose_headers(named(&[
                "location",
                "etag",
                "retry-after",
                "idempotent-replayed",
                "x-request-id",
                "x-trace-id",
            ]))
            .max_age(Duration::from_secs(600)),
    )
}

fn make_span(request: &Request) -> tracing::Span {
    let request_id = request.headers().get("x-request-id").and_then(|value| value.to_str().ok()).unwrap_or("");
    let span = tracing::info_span!(
        "request",
        http.method = %request.method(),
        http.path = %request.uri().path(),
        request_id,
        otel.kind = "server",
        enduser.id = tracing::field::Empty,
        shop.caller.service = tracing::field::Empty,
    );
    // Every log line under this span carries the trace's ids (telemetry's JSON format).
    telemetry::continue_trace(&span, request.headers());
    span
}

async fn trace_id_header(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if let Some(value) = telemetry::trace_id(&tracing::Span::current()).and_then(|id| HeaderValue::from_str(&id).ok()) {
        response.headers_mut().insert("x-trace-id", value);
    }
    response
}

async fn readiness(checks: Arc<Vec<Check>>, stopping: CancellationToken, details: bool) -> Response {
    if stopping.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "stopping", "checks": {}}))).into_response();
    }
    let results = futures::future::join_all(checks.iter().map(|check| async move {
        let outcome = match tokio::time::timeout(CHECK_TIMEOUT, (check.probe)()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
        };
        (check, outcome)
    }))
    .await;
    let mut ready = true;
    let mut degraded = false;
    let mut report = serde_json::Map::new();
    for (check, outcome) in results {
        let required = check.criticality == Criticality::Required;
        let passing = match outcome {
            Ok(()) => true,
            Err(error) => {
                // The error text is for operators only: the body is public.
                tracing::warn!(check = check.name, required, %error, "readiness check failing");
                match check.criticality {
                    Criticality::Required => ready = false,
                    Criticality::Optional => degraded = true,
                }
                false
            }
        };
        metrics::gauge!("readiness_check_passing", "check" => check.name, "required" => if required { "true" } else { "false" })
            .set(if passing { 1.0 } else { 0.0 });
        report.insert(
            check.name.to_owned(),
            json!({"status": if passing { "ok" } else { "failing" }, "required": required}),
        );
    }
    let (status, word) = match (ready, degraded) {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        (true, true) => (StatusCode::OK, "degraded"),
        (true, false) => (StatusCode::OK, "ready"),
    };
    if !details {
        return (status, Json(json!({"status": word}))).into_response();
    }
    (status, Json(json!({"status": word, "checks": report}))).into_response()
}

/// A token cancelled on SIGINT (Ctrl-C) or SIGTERM (Kubernetes' stop).
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = async {
            if let Err(error) = tokio::signal::ctrl_c().await {
                tracing::warn!(%error, "cannot listen for Ctrl-C");
                std::future::pending::<()>().await;
            }
        };
        #[cfg(unix)]
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        #[cfg(not(unix))]
        let terminate = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => tracing::info!("received Ctrl-C"),
            () = terminate => tracing::info!("received SIGTERM"),
        }
        cancel.cancel();
    });
    token
}
