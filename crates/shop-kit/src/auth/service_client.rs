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
/// expire. A call never waits for a renewal while its token is still valid: the renewal runs
/// in the background (one at a time), and the current token serves until shortly before it
/// expires, so a user service that is briefly down costs nothing. Without a valid token a call
/// waits for the one fetch in flight; after a failed fetch, calls within a second fail at
/// once with its reason instead of fetching again each.
#[derive(Clone)]
pub struct ServiceTokens {
    inner: Arc<TokensInner>,
}

struct TokensInner {
    credentials: ServiceCredentials,
    http: reqwest::Client,
    cache: Mutex<HashMap<&'static str, CachedToken>>,
    /// The last failed fetch per callee: when, and why.
    failures: Mutex<HashMap<&'static str, (Instant, String)>>,
    /// Held by the one fetch in flight.
    fetching: Arc<tokio::sync::Mutex<()>>,
}

/// How long before its expiry a token is no longer used (clock skew, the call's own time).
const EXPIRY_MARGIN: Duration = Duration::from_secs(15);

/// The longest lifetime believed from the issuer (its own ceiling is an hour).
const MAX_LIFETIME: Duration = Duration::from_secs(3600);

/// How long a failed fetch answers for the calls after it.
const FAILURE_HOLD: Duration = Duration::from_secs(1);

fn unavailable(callee: &str, reason: &str) -> tonic::Status {
    tonic::Status::unavailable(format!("no service token for calls to {callee}: {reason}"))
}

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
                failures: Mutex::new(HashMap::new()),
                fetching: Arc::new(tokio::sync::Mutex::new(())),
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

    fn recent_failure(&self, callee: &str) -> Option<String> {
        let failures = self.inner.failures.lock().ok()?;
        let (at, reason) = failures.get(callee)?;
        (at.elapsed() < FAILURE_HOLD).then(|| reason.clone())
    }

    /// A token for calls to `callee`; `UNAVAILABLE` when none can be had.
    pub async fn token(&self, callee: &'static str) -> Result<String, tonic::Status> {
        if let Some(token) = self.cached(callee, true) {
            return Ok(token);
        }
        if let Some(token) = self.cached(callee, false) {
            // Due for renewal but still valid: renew in the background, answer now.
            if let Ok(gate) = Arc::clone(&self.inner.fetching).try_lock_owned() {
                let tokens = self.clone();
                tokio::spawn(async move {
                    let _gate = gate;
                    let _ = tokens.refresh(callee).await;
                });
            }
            return Ok(token);
        }
        let _gate = self.inner.fetching.lock().await;
        if let Some(token) = self.cached(callee, true) {
            return Ok(token);
        }
        if let Some(reason) = self.recent_failure(callee) {
            return Err(unavailable(callee, &reason));
        }
        self.refresh(callee).await
    }

    /// Fetches a new token for `callee` and keeps it (the caller holds the fetch gate).
    async fn refresh(&self, callee: &'static str) -> Result<String, tonic::Status> {
        match self.fetch(callee).await {
            Ok((token, lifetime)) => {
                let lifetime = lifetime.min(MAX_LIFETIME);
                let now = Instant::now();
                let entry = CachedToken {
                    token: token.clone(),
                    renew_at: now + lifetime.mul_f64(0.75),
                    expires_at: now + lifetime.saturating_sub(EXPIRY_MARGIN),
                };
                if let Ok(mut cache) = self.inner.cache.lock() {
                    cache.insert(callee, entry);
                }
                if let Ok(mut failures) = self.inner.failures.lock() {
                    failures.remove(callee);
                }
                Ok(token)
            }
            Err(error) => {
                let reason = format!("{error:#}");
                let still_valid = self.cached(callee, false);
                tracing::warn!(audience = callee, error = %reason, using_current = still_valid.is_some(), "cannot get a service token");
                if let Ok(mut failures) = self.inner.failures.lock() {
                    failures.insert(callee, (Instant::now(), reason.clone()));
                }
                still_valid.ok_or_else(|| unavailable(callee, &reason))
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
            // Boxed as the error itself (not a box of a box), so that tonic finds the Status.
            let boxed = |status: tonic::Status| -> Box<dyn std::error::Error + Send + Sync> { Box::new(status) };
            let token = tokens.token(callee).await.map_err(boxed)?;
            let value = header::HeaderValue::try_from(format!("Bearer {token}"))
                .map_err(|_| boxed(tonic::Status::internal("the service token is not a header value")))?;
            request.headers_mut().insert(header::AUTHORIZATION, value);
            inner.call(request).await.map_err(Into::into)
        })
    }
}
