//! Authentication of gRPC calls: a tower layer (not a tonic `Interceptor`: interceptors are
//! synchronous, and verifying may have to fetch the JWKS, which is not).

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::http::header;
use futures::future::BoxFuture;

use super::{Caller, TokenRequirement, Verifier};

/// A tower layer for tonic services: verifies the bearer token of every call and puts the
/// [`Caller`] into the request's extensions, or answers `UNAUTHENTICATED`.
#[derive(Clone)]
pub struct GrpcAuth<S> {
    inner: S,
    verifier: Arc<Verifier>,
    requirement: TokenRequirement,
}

impl<S> GrpcAuth<S> {
    /// Every call needs a valid token.
    pub fn new(inner: S, verifier: Arc<Verifier>) -> Self {
        Self { inner, verifier, requirement: TokenRequirement::Required }
    }

    /// Calls may come without a token (public reads next to authenticated writes).
    pub fn optional(inner: S, verifier: Arc<Verifier>) -> Self {
        Self { inner, verifier, requirement: TokenRequirement::Optional }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for GrpcAuth<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for GrpcAuth<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service is the one that must be called; leave a clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = Arc::clone(&self.verifier);
        let anonymous_ok =
            self.requirement == TokenRequirement::Optional && !request.headers().contains_key(header::AUTHORIZATION);
        Box::pin(async move {
            if anonymous_ok {
                return inner.call(request).await;
            }
            match verifier.verify_headers(request.headers()).await {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(problem) => Ok(tonic::Status::from(problem).into_http()),
            }
        })
    }
}

/// The caller of an authenticated gRPC request (put there by [`GrpcAuth`]).
pub fn grpc_caller<T>(request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    request
        .extensions()
        .get::<Caller>()
        .copied()
        .ok_or_else(|| tonic::Status::unauthenticated("an Authorization: Bearer token is required"))
}
