//! `/v1/auth`: login, refresh (rotation with reuse detection), logout; and the JWKS.

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use serde::{Deserialize, Serialize};
use shop_kit::{
    auth::Jwks,
    error::{ApiJson, Problem},
    server::ClientIp,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    app::AppState,
    domain::{EMAIL_MAX_LEN, PASSWORD_MAX_LEN, RefreshSecret},
    error::Error,
    store::{self, Consumed, Verdict},
};

/// The longest refresh token we will look at; ours are 43 characters.
const REFRESH_TOKEN_MAX_LEN: usize = 512;

pub(super) fn router() -> OpenApiRouter<AppState> {
    // Answers that carry tokens must not be kept by a browser or an intermediary
    // (RFC 6749 §5.1): `Cache-Control: no-store`, and `Pragma: no-cache` for HTTP/1.0 caches.
    let tokens = OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(service_token))
        .route_layer(axum::middleware::map_response(no_store));
    OpenApiRouter::new().merge(tokens).routes(routes!(logout)).routes(routes!(jwks))
}

async fn no_store(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, header::HeaderValue::from_static("no-cache"));
    response
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// Single use: each refresh returns a new one.
    pub refresh_token: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct LoginRequest {
    #[schema(max_length = 254)]
    email: String,
    #[schema(max_length = 128)]
    password: String,
}

/// Exchange credentials for tokens. Unknown email and wrong password get the same answer.
#[utoipa::path(post, path = "/v1/auth/login", tag = "auth", request_body = LoginRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 401, description = "invalid_credentials", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "a field is longer than any account's can be", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "rate_limited: too many attempts from this address, or failures on this account; see Retry-After", body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, Error> {
    if body.email.chars().count() > EMAIL_MAX_LEN {
        return Err(Error::invalid("email", "must be at most 254 characters"));
    }
    if body.password.chars().count() > PASSWORD_MAX_LEN {
        return Err(Error::invalid("password", format!("must be at most {PASSWORD_MAX_LEN} characters")));
    }
    super::within(&state.rates().login, &shop_kit::client_ip::limit_key(ip)).await?;
    let email = body.email.trim().to_lowercase();
    if let Verdict::Limited { retry_after_secs } = state.limiter().attempt(&email, ip).await {
        return Err(Error::RateLimited { retry_after_secs });
    }
    let mut connection = state.pool().acquire().await.map_err(Error::from)?;
    // No account's email holds a NUL (registration refuses control characters), and Postgres
    // cannot take one in a text parameter.
    let user = if email.contains('\0') { None } else { store::users::by_email(&mut connection, &email).await? };
    let matches = state.hasher().verify(&body.password, user.as_ref().map(|user| user.password_hash.as_str())).await?;
    let user = match user {
        Some(user) if matches => user,
        // The attempt was counted as a failure already.
        _ => return Err(Error::InvalidCredentials),
    };
    state.limiter().record_success(&email, ip).await;
    let tokens = state.issue_tokens(&mut connection, &user, uuid::Uuid::now_v7()).await?;
    tracing::info!(user.id = %user.id, "logged in");
    Ok(Json(tokens))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RefreshRequest {
    /// As a login or refresh returned it (43 characters; never more than 512).
    #[schema(min_length = 1, max_length = 512)]
    refresh_token: String,
}

/// Trade a refresh token for a new pair. A token works once: presenting it again revokes
/// every token of that login.
#[utoipa::path(post, path = "/v1/auth/refresh", tag = "auth", request_body = RefreshRequest, responses(
    (status = 200, body = TokenResponse),
    (status = 401, description = "invalid_refresh_token or refresh_token_reused", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "rate_limited: too many refreshes from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn refresh(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, Error> {
    super::within(&state.rates().refresh, &shop_kit::client_ip::limit_key(ip)).await?;
    if body.refresh_token.is_empty() || body.refresh_token.chars().count() > REFRESH_TOKEN_MAX_LEN {
        return Err(Error::InvalidRefreshToken);
    }
    let hash = RefreshSecret::hash_of(&body.refresh_token);
    let mut transaction = state.pool().begin().await.map_err(Error::from)?;
    let consumed = store::refresh_tokens::consume(&mut transaction, &hash).await?;
    let token = match consumed {
        Consumed::Live(token) => token,
        Consumed::Reused => {
            // The revocation must stick even though the request fails.
            transaction.commit().await.map_err(Error::from)?;
            return Err(Error::RefreshTokenReused);
        }
        Consumed::Invalid => return Err(Error::InvalidRefreshToken),
    };
    let user = store::users::by_id(&mut transaction, token.user_id).await?.ok_or(Error::InvalidRefreshToken)?;
    let tokens = state.issue_tokens(&mut transaction, &user, token.family_id).await?;
    transaction.commit().await.map_err(Error::from)?;
    Ok(Json(tokens))
}

/// A service token request (RFC 6749 §4.4), form-encoded; the client authenticates with HTTP
/// Basic (its service name and secret).
#[derive(ToSchema)]
#[expect(dead_code, reason = "the form's schema only: the handler reads the form itself to answer RFC 6749's errors")]
pub(super) struct ServiceTokenRequest {
    #[schema(pattern = "^client_credentials$")]
    grant_type: String,
    /// The service the token is for: its audience becomes `service:<name>`.
    #[schema(pattern = "^(user|product|cart|order|payment|notification)$")]
    audience: String,
}

/// A short-lived token for one service to call another (ADR 0012): OAuth 2.0 client
/// credentials, the client authenticated with HTTP Basic (`<service>:<secret>`). Errors are
/// RFC 6749's (`invalid_request`, `invalid_client`, `unsupported_grant_type`, `invalid_target`).
#[utoipa::path(post, path = "/v1/oauth/token", tag = "auth", security(("client_basic" = [])),
    request_body(content = ServiceTokenRequest, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, body = shop_kit::auth::service::ServiceTokenResponse),
        (status = 400, description = "invalid_request, unsupported_grant_type or invalid_target", body = shop_kit::auth::service::OAuthErrorBody),
        (status = 401, description = "invalid_client: no HTTP Basic credentials, or an unknown client or wrong secret", body = shop_kit::auth::service::OAuthErrorBody,
            headers(("WWW-Authenticate" = String, description = "`Basic realm=\"shop\"`"))),
        (status = 429, description = "rate_limited: too many token requests from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
    ))]
pub(super) async fn service_token(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<shop_kit::auth::service::ServiceTokenResponse>, axum::response::Response> {
    super::within(&state.rates().service_token, &shop_kit::client_ip::limit_key(ip))
        .await
        .map_err(IntoResponse::into_response)?;
    state.issue_service_token(&headers, &body).map(Json).map_err(IntoResponse::into_response)
}

/// End a login: its refresh tokens stop working. 204 for any token the schema allows, known
/// or not.
#[utoipa::path(post, path = "/v1/auth/logout", tag = "auth", request_body = RefreshRequest, responses(
    (status = 204, description = "signed out"),
))]
pub(super) async fn logout(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<StatusCode, Error> {
    if body.refresh_token.is_empty() || body.refresh_token.chars().count() > REFRESH_TOKEN_MAX_LEN {
        return Err(Error::invalid("refresh_token", format!("must be 1 to {REFRESH_TOKEN_MAX_LEN} characters")));
    }
    let hash = RefreshSecret::hash_of(&body.refresh_token);
    let mut connection = state.pool().acquire().await.map_err(Error::from)?;
    if let Some(family) = store::refresh_tokens::family_of(&mut connection, &hash).await? {
        store::refresh_tokens::revoke_family(&mut connection, family).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The public keys that verify access tokens.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "auth", responses((status = 200, body = Jwks)))]
pub(super) async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(state.jwks()))
}
