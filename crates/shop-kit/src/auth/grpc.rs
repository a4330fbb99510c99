//! Authentication of gRPC calls: a tower layer (not a tonic `Interceptor`: interceptors are
//! synchronous, and verifying may have to fetch the JWKS, which is not).

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
};

use axum::http::header;
use futures::future::BoxFuture;

use super::{Caller, Principal, TokenRequirement, Verifier, service::ACTING_FOR};
use crate::error::Problem;

/// A tower layer for tonic services: verifies the bearer token of every call and puts the
/// [`Caller`] (a user) or the [`super::ServiceCaller`] (another service, with the customer its
/// `shop-acting-for` metadata names) into the request's extensions, or answers
/// `UNAUTHENTICATED`. Both are recorded on the request span (`enduser.id`, `shop.caller.service`)
/// for the audit trail. Service tokens count only where the verifier accepts them
/// ([`Verifier::accepting_services`]).
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
        let span = tracing::Span::current();
        Box::pin(async move {
            if anonymous_ok {
                return inner.call(request).await;
            }
            let principal = match super::bearer_token(request.headers()) {
                Ok(token) => verifier.verify_principal(token).await,
                Err(problem) => Err(problem),
            };
            match principal {
                Ok(Principal::User(caller)) => {
                    span.record("enduser.id", tracing::field::display(caller.user_id));
                    request.extensions_mut().insert(caller);
                }
                Ok(Principal::Service(mut caller)) => {
                    match acting_for(request.headers()) {
                        Ok(user) => caller.acting_for = user,
                        Err(problem) => return Ok(tonic::Status::from(problem).into_http()),
                    }
                    span.record("shop.caller.service", caller.service);
                    if let Some(user) = caller.acting_for {
                        span.record("enduser.id", tracing::field::display(user));
                    }
                    request.extensions_mut().insert(caller);
                }
                Err(problem) => return Ok(tonic::Status::from(problem).into_http()),
            }
            inner.call(request).await
        })
    }
}

/// The `shop-acting-for` user id a service sent, if any.
fn acting_for(headers: &http::HeaderMap) -> Result<Option<uuid::Uuid>, Problem> {
    let Some(value) = headers.get(ACTING_FOR) else { return Ok(None) };
    value
        .to_str()
        .ok()
        .and_then(|text| uuid::Uuid::parse_str(text).ok())
        .map(Some)
        .ok_or_else(|| Problem::bad_request("invalid_acting_for", format!("{ACTING_FOR} must be a user id (a UUID)")))
}

/// The user calling an authenticated gRPC request (put there by [`GrpcAuth`]); a service's
/// credential is refused here: these methods are for users.
pub fn grpc_caller<T>(request: &tonic::Request<T>) -> Result<Caller, tonic::Status> {
    if let Some(caller) = request.extensions().get::<Caller>() {
        return Ok(*caller);
    }
    if request.extensions().get::<super::ServiceCaller>().is_some() {
        return Err(Problem::forbidden("this method is for users; a service's credential cannot call it").into());
    }
    Err(tonic::Status::unauthenticated("an Authorization: Bearer token is required"))
}
