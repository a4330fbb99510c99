//! Service identities (ADR 0012): OAuth 2.0 client credentials (RFC 6749 §4.4) issued by the
//! user service, one short-lived token per calling service and callee.
//!
//! - The user service keeps the [`ServiceClients`] (one secret per service, mounted as files)
//!   and answers `POST /v1/oauth/token` with a [`ServiceTokenIssuer`].
//! - A calling service holds its [`super::ServiceCredentials`]; [`super::ServiceTokens`] fetches
//!   a token per callee and renews it before it expires, and [`super::ServiceAuth`] puts it on
//!   every call of an outbound gRPC channel. [`crate::grpc::acting_for`] adds the customer a call is made for.
//! - A called service verifies with [`super::Verifier::accepting_services`]; `GrpcAuth` puts a
//!   [`ServiceCaller`] into the request, and a method admits its callers with [`grpc_service`].
//!
//! A service token's audience is `service:<callee>`: it is refused by every other service and by
//! every REST route (whose audience is the user tokens' `JWT_AUDIENCE`).

use std::{collections::HashMap, path::Path, time::Duration};

use anyhow::Context as _;
use axum::{
    Json,
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Caller, SigningKey};
use crate::error::Problem;

/// The services that may hold an identity: the client ids, and the callees of a token.
pub const SERVICES: [&str; 6] = ["user", "product", "cart", "order", "payment", "notification"];

/// The shortest client secret accepted (characters): 32 random characters are beyond guessing.
pub const MIN_SECRET_LEN: usize = 32;

/// The longest client secret accepted (characters).
pub const MAX_SECRET_LEN: usize = 256;

/// The metadata key naming the customer a service's call is made for (a user id), for audit.
pub const ACTING_FOR: &str = "shop-acting-for";

/// Where the user service issues service tokens when `SERVICE_TOKEN_URL` is not set (the local
/// layout of `cargo xtask up`).
pub const DEFAULT_TOKEN_URL: &str = "http://127.0.0.1:8081/v1/oauth/token";

/// The audience of a token for calls to `callee`.
pub fn audience(callee: &str) -> String {
    format!("service:{callee}")
}

fn known_service(name: &str) -> Option<&'static str> {
    SERVICES.iter().copied().find(|service| *service == name)
}

/// A service's identity from its name as the binaries spell it (`order-service` or `order`).
pub fn identity(name: &str) -> Option<&'static str> {
    known_service(name.strip_suffix("-service").unwrap_or(name))
}

/// The claims of a service token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceClaims {
    /// The calling service (a client id).
    pub sub: String,
    pub iss: String,
    /// `service:<callee>`.
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// A verified calling service, with the customer it acts for when it said so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceCaller {
    pub service: &'static str,
    pub acting_for: Option<Uuid>,
}

/// Admits a gRPC call from one of the `allowed` services: `UNAUTHENTICATED` without a token,
/// `PERMISSION_DENIED` for a customer, an admin, or any other service.
pub fn grpc_service<T>(request: &tonic::Request<T>, allowed: &[&str]) -> Result<ServiceCaller, tonic::Status> {
    if let Some(caller) = request.extensions().get::<ServiceCaller>() {
        if allowed.contains(&caller.service) {
            return Ok(*caller);
        }
        return Err(Problem::forbidden(format!("the {} service may not call this method", caller.service)).into());
    }
    if request.extensions().get::<Caller>().is_some() {
        return Err(
            Problem::forbidden("this method is internal: only other services of the platform may call it").into()
        );
    }
    Err(Problem::unauthenticated("an Authorization: Bearer token is required").into())
}

/// The registered clients: each service's secret, as its SHA-256 (compared digest to digest, so
/// the time a comparison takes says nothing about the secret).
#[derive(Default)]
pub struct ServiceClients {
    digests: HashMap<&'static str, [u8; 32]>,
}

impl std::fmt::Debug for ServiceClients {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("ServiceClients").field("clients", &self.names()).finish()
    }
}

fn digest(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut bytes = [0; 32];
    bytes.copy_from_slice(digest.as_ref());
    bytes
}

/// Checks a client secret's shape: printable ASCII without spaces, of a guess-proof length.
pub fn check_secret(secret: &str) -> Result<(), String> {
    let length = secret.chars().count();
    if !(MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&length) {
        return Err(format!("must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} characters, not {length}"));
    }
    if !secret.chars().all(|character| character.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces".into());
    }
    Ok(())
}

impl ServiceClients {
    /// Registers `name` with `secret`.
    pub fn insert(&mut self, name: &str, secret: &str) -> anyhow::Result<()> {
        let service = known_service(name)
            .with_context(|| format!("{name:?} is not a service of this platform (one of {SERVICES:?})"))?;
        check_secret(secret).map_err(|reason| anyhow::anyhow!("the secret of {name}: {reason}"))?;
        self.digests.insert(service, digest(secret));
        Ok(())
    }

    /// One file per client in `directory`, named by the service and holding its secret (a
    /// Kubernetes Secret mounted as a volume; its `..data` entries are skipped).
    pub fn from_dir(directory: &Path) -> anyhow::Result<Self> {
        let mut clients = Self::default();
        let entries = std::fs::read_dir(directory).with_context(|| format!("cannot list {}", directory.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", directory.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || entry.path().is_dir() {
                continue;
            }
            let text = std::fs::read_to_string(entry.path())
                .with_context(|| format!("cannot read {}", entry.path().display()))?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            clients.insert(&name, secret).with_context(|| format!("in {}", directory.display()))?;
        }
        Ok(clients)
    }

    /// The registered client ids, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.digests.keys().copied().collect();
        names.sort_unstable();
        names
    }

    fn check(&self, name: &str, secret: &str) -> Option<&'static str> {
        let service = known_service(name)?;
        let expected = self.digests.get(service)?;
        (*expected == digest(secret)).then_some(service)
    }
}

/// A refusal of the token endpoint, as RFC 6749 §5.2 spells it.
#[derive(Debug, PartialEq, Eq)]
pub struct OAuthError {
    pub status: StatusCode,
    pub error: &'static str,
    pub description: String,
}

impl OAuthError {
    fn request(description: impl Into<String>) -> Self {
        Self { status: StatusCode::BAD_REQUEST, error: "invalid_request", description: description.into() }
    }

    fn client(description: impl Into<String>) -> Self {
        Self { status: StatusCode::UNAUTHORIZED, error: "invalid_client", description: description.into() }
    }
}

/// The body of an RFC 6749 §5.2 error answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OAuthErrorBody {
    /// `invalid_request`, `invalid_client`, `unsupported_grant_type` or `invalid_target`.
    pub error: String,
    pub error_description: String,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = OAuthErrorBody { error: self.error.to_owned(), error_description: self.description };
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"shop\""));
        }
        response
    }
}

/// A service token (RFC 6749 §5.1).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServiceTokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the token expires.
    pub expires_in: u64,
}

/// Issues service tokens to the registered clients.
#[derive(Debug)]
pub struct ServiceTokenIssuer {
    clients: ServiceClients,
    issuer: String,
    ttl: Duration,
}

/// The form of a client id or secret inside HTTP Basic (RFC 6749 §2.3.1: form-encoded first).
fn form_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("v={text}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

pub(super) fn form_encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

impl ServiceTokenIssuer {
    pub fn new(clients: ServiceClients, issuer: impl Into<String>, ttl: Duration) -> Self {
        Self { clients, issuer: issuer.into(), ttl }
    }

    pub fn clients(&self) -> &ServiceClients {
        &self.clients
    }

    /// Answers a token request (`headers` and the form `body`), signing with `key`.
    pub fn issue(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        key: &SigningKey,
    ) -> Result<ServiceTokenResponse, OAuthError> {
        // The client first: an unauthenticated caller learns nothing about its request.
        let service = self.authenticate(headers)?;
        let form_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.split(';').next())
            .is_some_and(|value| value.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
        if !form_type {
            return Err(OAuthError::request("the body must be application/x-www-form-urlencoded"));
        }
        let mut form: HashMap<String, String> = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            if form.insert(name.clone().into_owned(), value.into_owned()).is_some() {
                return Err(OAuthError::request(format!("{name} is given more than once")));
            }
        }
        match form.get("grant_type").map(String::as_str) {
            None => return Err(OAuthError::request("grant_type is required")),
            Some("client_credentials") => {}
            Some(_) => {
                return Err(OAuthError {
                    status: StatusCode::BAD_REQUEST,
                    error: "unsupported_grant_type",
                    description: "only client_credentials is issued here".into(),
                });
            }
        }
        let callee = form.get("audience").ok_or_else(|| OAuthError::request("audience is required"))?;
        let callee = known_service(callee).ok_or_else(|| OAuthError {
            status: StatusCode::BAD_REQUEST,
            error: "invalid_target",
            description: format!("the audience must name a service: one of {SERVICES:?}"),
        })?;
        let now = chrono::Utc::now().timestamp();
        let claims = ServiceClaims {
            sub: service.to_owned(),
            iss: self.issuer.clone(),
            aud: audience(callee),
            iat: now,
            exp: now.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2)),
            jti: Uuid::now_v7(),
        };
        let access_token = key.sign(&claims).map_err(|_| OAuthError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            error: "server_error",
            description: "the token cannot be signed".into(),
        })?;
        tracing::debug!(client = service, audience = callee, "service token issued");
        Ok(ServiceTokenResponse { access_token, token_type: "Bearer".into(), expires_in: self.ttl.as_secs() })
    }

    fn authenticate(&self, headers: &HeaderMap) -> Result<&'static str, OAuthError> {
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| OAuthError::client("client authentication (HTTP Basic) is required"))?;
        let value = value.to_str().map_err(|_| OAuthError::client("the Authorization header is not text"))?;
        let encoded = value
            .split_once(' ')
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
            .map(|(_, encoded)| encoded.trim())
            .ok_or_else(|| OAuthError::client("client authentication must be HTTP Basic"))?;
        let decoded = STANDARD
            .decode(encoded)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| OAuthError::client("the Basic credentials are not base64 text"))?;
        let (id, secret) =
            decoded.split_once(':').ok_or_else(|| OAuthError::client("the Basic credentials must be id:secret"))?;
        let (id, secret) = (form_decode(id), form_decode(secret));
        self.clients.check(&id, &secret).ok_or_else(|| {
            tracing::warn!(client = %id.chars().take(40).collect::<String>(), "service token refused: unknown client or wrong secret");
            OAuthError::client("unknown client or wrong secret")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn basic(id: &str, secret: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().unwrap());
        let value = format!("Basic {}", STANDARD.encode(format!("{}:{}", form_encode(id), form_encode(secret))));
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn issuer() -> ServiceTokenIssuer {
        let mut clients = ServiceClients::default();
        clients.insert("order", SECRET).unwrap();
        ServiceTokenIssuer::new(clients, "shop-user", Duration::from_secs(300))
    }

    #[test]
    fn a_registered_client_gets_a_token_for_one_callee() {
        let (key, _) = SigningKey::generate().unwrap();
        let answer =
            issuer().issue(&basic("order", SECRET), b"grant_type=client_credentials&audience=product", &key).unwrap();
        assert_eq!((answer.token_type.as_str(), answer.expires_in), ("Bearer", 300));
        let payload = answer.access_token.split('.').nth(1).unwrap();
        let claims: ServiceClaims =
            serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        assert_eq!((claims.sub.as_str(), claims.aud.as_str()), ("order", "service:product"));
        assert_eq!(claims.exp - claims.iat, 300);
    }

    #[test]
    fn every_bad_request_gets_its_rfc_6749_error() {
        let (key, _) = SigningKey::generate().unwrap();
        let good = "grant_type=client_credentials&audience=product";
        let mut no_auth = basic("order", SECRET);
        no_auth.remove(header::AUTHORIZATION);
        let mut bearer = basic("order", SECRET);
        bearer.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        let mut json = basic("order", SECRET);
        json.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let cases: Vec<(&str, HeaderMap, &str, u16, &str)> = vec![
            ("wrong secret", basic("order", "x".repeat(32).as_str()), good, 401, "invalid_client"),
            ("unknown client", basic("payment", SECRET), good, 401, "invalid_client"),
            ("not a service", basic("mallory", SECRET), good, 401, "invalid_client"),
            ("no authentication", no_auth, good, 401, "invalid_client"),
            ("bearer instead of basic", bearer, good, 401, "invalid_client"),
            ("json body", json, good, 400, "invalid_request"),
            ("no grant type", basic("order", SECRET), "audience=product", 400, "invalid_request"),
            (
                "password grant",
                basic("order", SECRET),
                "grant_type=password&audience=product",
                400,
                "unsupported_grant_type",
            ),
            ("no audience", basic("order", SECRET), "grant_type=client_credentials", 400, "invalid_request"),
            (
                "unknown audience",
                basic("order", SECRET),
                "grant_type=client_credentials&audience=bank",
                400,
                "invalid_target",
            ),
            (
                "twice",
                basic("order", SECRET),
                "grant_type=client_credentials&audience=product&audience=cart",
                400,
                "invalid_request",
            ),
        ];
        for (name, headers, body, status, error) in cases {
            let refusal = issuer().issue(&headers, body.as_bytes(), &key).expect_err(name);
            assert_eq!((refusal.status.as_u16(), refusal.error), (status, error), "case {name}");
        }
    }

    #[test]
    fn secrets_are_read_from_a_mounted_directory_and_checked() {
        let directory = std::env::temp_dir().join(format!("shop-clients-{}", Uuid::now_v7()));
        std::fs::create_dir_all(directory.join("..2026_12_04")).unwrap();
        std::fs::write(directory.join("order"), format!("{SECRET}\n")).unwrap();
        std::fs::write(directory.join("..data"), "skipped").unwrap();
        let clients = ServiceClients::from_dir(&directory).unwrap();
        assert_eq!(clients.names(), vec!["order"]);
        assert_eq!(clients.check("order", SECRET), Some("order"));
        assert_eq!(clients.check("order", &SECRET[1..]), None);
        std::fs::write(directory.join("cart"), "short").unwrap();
        let error = format!("{:#}", ServiceClients::from_dir(&directory).unwrap_err());
        assert!(error.contains("the secret of cart: must be 32 to 256 characters"), "{error}");
        std::fs::remove_file(directory.join("cart")).unwrap();
        std::fs::write(directory.join("bank"), SECRET).unwrap();
        let error = format!("{:#}", ServiceClients::from_dir(&directory).unwrap_err());
        assert!(error.contains("\"bank\" is not a service"), "{error}");
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
