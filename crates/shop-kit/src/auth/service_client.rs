//! The calling side of service identities (ADR 0012): a service's own credential, the tokens
//! it gets with it (one per callee, cached and renewed), and the tower layer that puts them on
//! every outbound gRPC call.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use axum::http::header;
use base64::{Engine as _, engine::general_purpose::STANDARD};
use futures::future::BoxFuture;
use secrecy::{ExposeSecret as _, SecretString};

use super::service::{DEFAULT_TOKEN_URL, OAuthErrorBody, ServiceTokenResponse, check_secret, form_encode, identity};
use crate::config::{ConfigError, Vars};

/// A calling service's own credential.
pub struct ServiceCredentials {
    /// The service's name: its client id.
    pub client_id: &'static str,
    secret: SecretString,
    /// `SERVICE_TOKEN_URL`.
    pub token_url: String,
}

impl std::fmt::Debug for ServiceCredentials {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ServiceCredentials")
            .field("client_id", &self.client_id)
            .field("token_url", &self.token_url)
            .finish_non_exhaustive()
    }
}

impl ServiceCredentials {
    /// `SERVICE_CLIENT_SECRET` (or `SERVICE_CLIENT_SECRET_FILE`, required) and
    /// `SERVICE_TOKEN_URL` (default [`DEFAULT_TOKEN_URL`]); the client id is `service`'s
    /// [`identity`].
    pub fn from_vars(vars: &Vars, service: &str) -> Result<Self, ConfigError> {
        let client_id = identity(service).ok_or_else(|| ConfigError::Invalid {
            name: "SERVICE_CLIENT_SECRET".into(),
            value: "(hidden)".into(),
            reason: format!("{service} is not a service of this platform"),
        })?;
        let secret = vars.secret("SERVICE_CLIENT_SECRET")?;
        check_secret(secret.expose_secret()).map_err(|reason| ConfigError::Invalid {
            name: "SERVICE_CLIENT_SECRET".into(),
            value: "(hidden)".into(),
            reason,
        })?;
        let token_url = vars.raw("SERVICE_TOKEN_URL").unwrap_or(DEFAULT_TOKEN_URL).to_owned();
        if !(token_url.starts_with("http://") || token_url.starts_with("https://")) {
            return Err(vars.invalid("SERVICE_TOKEN_URL", "must be an http:// or https:// URL"));
        }
        Ok(Self { client_id, secret, token_url })
    }
}

struct CachedToken {
    token: String,
    /// From here on a call tries to renew it.
    renew_at: Instant,
    /// From here on it is not used.
    expires_at: Instant,
}

/// Service tokens for one calling service, one per callee, cached and renewed before they
/// expire. Renewal is single-flight; while it runs (or fails) the current token is used until
/// shortly before its expiry, so a user service that is briefly down costs nothing.
#[derive(Clone)]
pub struct ServiceTokens {
    inner: Arc<TokensInner>,
}

struct TokensInner {
    credentials: ServiceCredentials,
    http: reqwest::Client,
    cache: Mutex<HashMap<&'static str, CachedToken>>,
    fetching: tokio::sync::Mutex<()>,
}

/// How long before its expiry a token is no longer used (clock skew, the call's own time).
const EXPIRY_MARGIN: Duration = Duration::from_secs(15);

impl ServiceTokens {
    pub fn new(credentials: ServiceCredentials) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2))
            .build()
            .context("cannot build the service token HTTP client")?;
        Ok(Self {
            inner: Arc::new(TokensInner {
                credentials,
                http,
                cache: Mutex::new(HashMap::new()),
                fetching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    fn cached(&self, callee: &str, fresh: bool) -> Option<String> {
        let cache = self.inner.cache.lock().ok()?;
        let entry = cache.get(callee)?;
        let now = Instant::now();
        let usable = if fresh { now < entry.renew_at } else { now < entry.expires_at };
        usable.then(|| entry.token.clone())
    }

    /// A token for calls to `callee`; `UNAVAILABLE` when none can be had.
    pub async fn token(&self, callee: &'static str) -> Result<String, tonic::Status> {
        if let Some(token) = self.cached(callee, true) {
            return Ok(token);
        }
        let _gate = match self.inner.fetching.try_lock() {
            Ok(gate) => gate,
            Err(_) => {
                // Another call is renewing: use what is still valid, or wait for it.
                if let Some(token) = self.cached(callee, false) {
                    return Ok(token);
                }
                self.inner.fetching.lock().await
            }
        };
        if let Some(token) = self.cached(callee, true) {
            return Ok(token);
        }
        match self.fetch(callee).await {
            Ok((token, lifetime)) => {
                let now = Instant::now();
                let entry = CachedToken {
                    token: token.clone(),
                    renew_at: now + lifetime.mul_f64(0.75),
                    expires_at: now + lifetime.saturating_sub(EXPIRY_MARGIN),
                };
                if let Ok(mut cache) = self.inner.cache.lock() {
                    cache.insert(callee, entry);
                }
                Ok(token)
            }
            Err(error) => {
                let still_valid = self.cached(callee, false);
                tracing::warn!(audience = callee, error = %format!("{error:#}"), using_current = still_valid.is_some(), "cannot get a service token");
                still_valid.ok_or_else(|| {
                    tonic::Status::unavailable(format!("no service token for calls to {callee}: {error:#}"))
                })
            }
        }
    }

    async fn fetch(&self, callee: &str) -> anyhow::Result<(String, Duration)> {
        let credentials = &self.inner.credentials;
        let basic = STANDARD.encode(format!(
            "{}:{}",
            form_encode(credentials.client_id),
            form_encode(credentials.secret.expose_secret())
        ));
        let response = self
            .inner
            .http
            .post(&credentials.token_url)
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .form(&[("grant_type", "client_credentials"), ("audience", callee)])
            .send()
            .await
            .with_context(|| format!("{} cannot be reached", credentials.token_url))?;
        let status = response.status();
        if !status.is_success() {
            let body: Option<OAuthErrorBody> = response.json().await.ok();
            anyhow::bail!(
                "{} answered {status}{}",
                credentials.token_url,
                body.map(|body| format!(": {} ({})", body.error, body.error_description)).unwrap_or_default()
            );
        }
        let answer: ServiceTokenResponse = response.json().await.context("the token answer is not a token")?;
        anyhow::ensure!(answer.token_type.eq_ignore_ascii_case("bearer"), "the token is not a bearer token");
        Ok((answer.access_token, Duration::from_secs(answer.expires_in)))
    }
}

/// A client-side tower layer for a gRPC channel to `callee`: every call carries this service's
/// token for it. A call that cannot get one fails with `UNAVAILABLE` without being sent.
#[derive(Clone)]
pub struct ServiceAuth<S> {
    inner: S,
    tokens: ServiceTokens,
    callee: &'static str,
}

impl<S> ServiceAuth<S> {
    pub fn new(inner: S, tokens: ServiceTokens, callee: &'static str) -> Self {
        Self { inner, tokens, callee }
    }
}

impl<S, B> tower::Service<http::Request<B>> for ServiceAuth<S>
where
    S: tower::Service<http::Request<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = BoxFuture<'static, Result<S::Response, Self::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context).map_err(Into::into)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service is the one that must be called; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let (tokens, callee) = (self.tokens.clone(), self.callee);
        Box::pin(async move {
            let token = tokens.token(callee).await.map_err(Box::new)?;
            let value = header::HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Box::new(tonic::Status::internal("the service token is not a header value")))?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}
