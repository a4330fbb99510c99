//! Authentication: EdDSA (Ed25519) JWTs signed by the user service, verified everywhere.
//!
//! - [`SigningKey`] (user service only) loads a PKCS#8 PEM key, issues access tokens and
//!   publishes its public half as a JWK.
//! - [`Verifier`] checks a token's signature (EdDSA only: `none`, HMAC and RSA are refused),
//!   key id, issuer, audience and expiry, with keys from a [`KeySource`]: the service's own
//!   key, or a [`JwksClient`] that caches the user service's JWKS and refreshes it when an
//!   unknown key id appears (key rotation) at most once per `min_refresh`.
//! - [`Caller`] is the verified caller: an axum extractor for REST, and, through
//!   [`GrpcAuth`], a value in every authenticated gRPC request's extensions.
//!
//! Why a tower layer rather than a tonic `Interceptor` for gRPC: interceptors are
//! synchronous, and verifying may have to fetch the JWKS, which is not.

use std::{collections::HashMap, time::Duration};

use axum::{
    extract::FromRequestParts,
    http::{HeaderMap, header, request::Parts},
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod grpc;
mod jwks;
mod keys;
pub mod service;
mod service_client;

pub use grpc::{GrpcAuth, grpc_caller};
pub use jwks::{JwksClient, MIN_REFRESH};
pub use keys::{MAX_SIGNING_KEYS, SigningKey, SigningKeys};
pub use service::{ServiceCaller, grpc_service};
pub use service_client::{ServiceAuth, ServiceCredentials, ServiceTokens};

use crate::{
    config::{ConfigError, HumanDuration, Vars},
    error::Problem,
};

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Customer,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Customer => "customer",
            Self::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "customer" => Ok(Self::Customer),
            "admin" => Ok(Self::Admin),
            other => Err(format!("unknown role {other:?}")),
        }
    }
}

/// The claims of a Shop access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    pub role: Role,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// The token's own id.
    pub jti: Uuid,
}

/// The verified caller of a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub role: Role,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), Problem> {
        if self.is_admin() { Ok(()) } else { Err(Problem::forbidden("this action needs the admin role")) }
    }

    /// 403 unless the caller owns the resource or is an admin.
    pub fn require_owner_or_admin(&self, owner: Uuid) -> Result<(), Problem> {
        if self.user_id == owner || self.is_admin() {
            Ok(())
        } else {
            Err(Problem::forbidden("this resource belongs to another user"))
        }
    }
}

/// Where the user service publishes its keys when `JWKS_URL` is not set (the local layout of
/// `cargo xtask up`).
pub const DEFAULT_JWKS_URL: &str = "http://127.0.0.1:8081/.well-known/jwks.json";

/// Settings shared by every service that checks tokens.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// `JWT_ISSUER` (default `shop-user`).
    pub issuer: String,
    /// `JWT_AUDIENCE` (default `shop`).
    pub audience: String,
    /// `JWKS_URL`: where services other than the user service fetch the keys.
    pub jwks_url: Option<String>,
    /// `JWKS_CACHE_TTL`: how long fetched keys are trusted before a refresh (default 5m).
    pub jwks_ttl: Duration,
}

impl AuthConfig {
    pub fn from_vars(vars: &Vars) -> Result<Self, ConfigError> {
        Ok(Self {
            issuer: vars.raw("JWT_ISSUER").unwrap_or("shop-user").to_owned(),
            audience: vars.raw("JWT_AUDIENCE").unwrap_or("shop").to_owned(),
            jwks_url: vars.optional("JWKS_URL")?,
            jwks_ttl: vars.or("JWKS_CACHE_TTL", HumanDuration(Duration::from_secs(300)))?.0,
        })
    }

    /// `JWKS_URL`, or [`DEFAULT_JWKS_URL`].
    pub fn jwks_endpoint(&self) -> &str {
        self.jwks_url.as_deref().unwrap_or(DEFAULT_JWKS_URL)
    }
}

/// A public key in JWK form (RFC 8037 `OKP` / `Ed25519`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub key_use: Option<String>,
}

/// A JSON Web Key Set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// Where a [`Verifier`] gets public keys.
pub enum KeySource {
    /// Keys known at start (the user service's own).
    Static(HashMap<String, DecodingKey>),
    /// Keys fetched from a JWKS URL and cached.
    Jwks(JwksClient),
}

impl KeySource {
    /// The keys of a JWKS document.
    pub fn from_jwks(jwks: &Jwks) -> Self {
        Self::Static(decoding_keys(jwks))
    }

    async fn key(&self, kid: &str) -> Result<DecodingKey, Problem> {
        match self {
            Self::Static(keys) => keys.get(kid).cloned().ok_or_else(unknown_key),
            Self::Jwks(client) => client.key(kid).await,
        }
    }
}

fn unknown_key() -> Problem {
    Problem::unauthenticated("the token was signed with an unknown key")
}

fn decoding_keys(jwks: &Jwks) -> HashMap<String, DecodingKey> {
    jwks.keys
        .iter()
        .filter(|jwk| jwk.kty == "OKP" && jwk.crv == "Ed25519")
        .filter_map(|jwk| DecodingKey::from_ed_components(&jwk.x).ok().map(|key| (jwk.kid.clone(), key)))
        .collect()
}

/// Checks access tokens.
pub struct Verifier {
    validation: Validation,
    /// Users' tokens and, once [`Verifier::accepting_services`] named this service, service
    /// tokens for it.
    principals: Validation,
    /// `service:<this service>`, the audience of service tokens for it.
    service_audience: Option<String>,
    keys: KeySource,
}

/// Who a gRPC call comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Principal {
    User(Caller),
    Service(ServiceCaller),
}

/// The claims of either kind of token, told apart by their audience.
#[derive(Deserialize)]
struct AnyClaims {
    sub: String,
    aud: String,
    #[serde(default)]
    role: Option<Role>,
}

impl Verifier {
    pub fn new(config: &AuthConfig, keys: KeySource) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 30;
        Self { principals: validation.clone(), validation, service_audience: None, keys }
    }

    /// The verifier of every service but the user service: keys from the JWKS at `jwks_url`,
    /// and service tokens for `service` accepted on gRPC.
    pub fn remote(config: &AuthConfig, jwks_url: &str, service: &str) -> anyhow::Result<Self> {
        Ok(Self::new(config, KeySource::Jwks(JwksClient::new(jwks_url, config.jwks_ttl)?)).accepting_services(service))
    }
    /// Also accepts, through [`Verifier::verify_principal`], service tokens for `service`
    /// (this service's name, `order-service` or `order`): audience `service:order`.
    #[must_use]
    pub fn accepting_services(mut self, service: &str) -> Self {
        let audience = service::audience(service::identity(service).unwrap_or(service));
        let user_audience = self.validation.aud.iter().flatten().cloned().collect::<Vec<_>>();
        let mut audiences = user_audience;
        audiences.push(audience.clone());
        self.principals.set_audience(&audiences);
        self.service_audience = Some(audience);
        self
    }

    async fn decode<T: serde::de::DeserializeOwned>(&self, token: &str, validation: &Validation) -> Result<T, Problem> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Problem::unauthenticated("the token is malformed"))?;
        if header.alg != Algorithm::EdDSA {
            return Err(Problem::unauthenticated("the token's algorithm is not accepted"));
        }
        let kid = header.kid.ok_or_else(|| Problem::unauthenticated("the token has no key id"))?;
        let key = self.keys.key(&kid).await?;
        let data = jsonwebtoken::decode::<T>(token, &key, validation).map_err(|error| match error.kind() {
            ErrorKind::ExpiredSignature => Problem::unauthenticated("the token has expired"),
            ErrorKind::InvalidSignature => Problem::unauthenticated("the token's signature is invalid"),
            ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                Problem::unauthenticated("the token was not issued for this service")
            }
            _ => Problem::unauthenticated("the token is invalid"),
        })?;
        Ok(data.claims)
    }

    /// The user or the service a token speaks for (service tokens only once
    /// [`Verifier::accepting_services`] named this service), or a 401 problem saying why not.
    pub async fn verify_principal(&self, token: &str) -> Result<Principal, Problem> {
        let claims: AnyClaims = self.decode(token, &self.principals).await?;
        if self.service_audience.as_deref() == Some(claims.aud.as_str()) {
            if claims.role.is_some() {
                return Err(Problem::unauthenticated("the token is invalid"));
            }
            let service = service::SERVICES
                .iter()
                .copied()
                .find(|service| *service == claims.sub)
                .ok_or_else(|| Problem::unauthenticated("the token names no service of this platform"))?;
            return Ok(Principal::Service(ServiceCaller { service, acting_for: None }));
        }
        let user_id = Uuid::parse_str(&claims.sub).map_err(|_| Problem::unauthenticated("the token is invalid"))?;
        let role = claims.role.ok_or_else(|| Problem::unauthenticated("the token is invalid"))?;
        Ok(Principal::User(Caller { user_id, role }))
    }

    /// The user a token speaks for, or a 401 problem saying why not (a service token is
    /// refused: its audience is not this one).
    pub async fn verify(&self, token: &str) -> Result<Caller, Problem> {
        let claims: Claims = self.decode(token, &self.validation).await?;
        Ok(Caller { user_id: claims.sub, role: claims.role })
    }

    /// The caller named by an `Authorization: Bearer` header.
    pub async fn verify_headers(&self, headers: &HeaderMap) -> Result<Caller, Problem> {
        let token = bearer_token(headers)?;
        self.verify(token).await
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, Problem> {
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| Problem::unauthenticated("an Authorization: Bearer token is required"))?;
    let value = value.to_str().map_err(|_| Problem::unauthenticated("the Authorization header is not text"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| Problem::unauthenticated("the Authorization header must be Bearer <token>"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(Problem::unauthenticated("the Authorization header must be Bearer <token>"));
    }
    Ok(token.trim())
}

/// A state that can verify tokens: implement it on a service's `AppState` to use
/// [`Caller`] as an extractor.
pub trait AuthState {
    fn verifier(&self) -> &Verifier;
}

impl<S> FromRequestParts<S> for Caller
where
    S: AuthState + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        state.verifier().verify_headers(&parts.headers).await
    }
}

/// Whether a gRPC service needs a token on every call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRequirement {
    /// Calls without a token are refused with `UNAUTHENTICATED`.
    Required,
    /// Calls without a token pass with no [`Caller`]; methods that need one ask
    /// [`grpc_caller`]. A token that is present must still verify.
    Optional,
}

/// A caller with the admin role: 401 without a valid token, 403 for anyone else, decided
/// before the request body is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admin(pub Caller);

impl<S> FromRequestParts<S> for Admin
where
    S: AuthState + Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = state.verifier().verify_headers(&parts.headers).await?;
        caller.require_admin()?;
        Ok(Self(caller))
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    use jsonwebtoken::{EncodingKey, Header};

    use super::*;

    fn config() -> AuthConfig {
        AuthConfig {
            issuer: "shop-user".into(),
            audience: "shop".into(),
            jwks_url: None,
            jwks_ttl: Duration::from_secs(300),
        }
    }

    fn claims(exp_offset: i64) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: Uuid::now_v7(),
            role: Role::Customer,
            iss: "shop-user".into(),
            aud: "shop".into(),
            iat: now,
            exp: now + exp_offset,
            jti: Uuid::now_v7(),
        }
    }

    fn verifier_for(key: &SigningKey) -> Verifier {
        Verifier::new(&config(), KeySource::from_jwks(&Jwks { keys: vec![key.jwk()] }))
    }

    #[tokio::test]
    async fn signs_and_verifies_and_refuses_forgeries() {
        let (key, pem_text) = SigningKey::generate().unwrap();
        let reloaded = SigningKey::from_pem(&pem_text).unwrap();
        assert_eq!(reloaded.kid(), key.kid());
        let verifier = verifier_for(&key);
        let good = claims(600);
        let caller = verifier.verify(&key.sign(&good).unwrap()).await.unwrap();
        assert_eq!(caller, Caller { user_id: good.sub, role: Role::Customer });

        let (other, _) = SigningKey::generate().unwrap();
        let b64 = |value: &serde_json::Value| URL_SAFE_NO_PAD.encode(value.to_string());
        let body = b64(&serde_json::to_value(&good).unwrap());
        let valid = key.sign(&good).unwrap();
        let signature = valid.rsplit('.').next().unwrap();
        let mut wrong_kid = Header::new(Algorithm::EdDSA);
        wrong_kid.kid = Some(key.kid().to_owned());
        let admin = Claims { role: Role::Admin, ..good.clone() };
        let cases: Vec<(&str, String)> = vec![
            ("expired", key.sign(&claims(-120)).unwrap()),
            ("other key, unknown kid", other.sign(&good).unwrap()),
            (
                "other key, our kid",
                jsonwebtoken::encode(&wrong_kid, &good, &EncodingKey::from_ed_der(&[])).unwrap_or_default(),
            ),
            ("alg none", format!("{}.{body}.", b64(&serde_json::json!({"alg": "none", "kid": key.kid()})))),
            (
                "alg HS256",
                jsonwebtoken::encode(
                    &Header { kid: Some(key.kid().into()), ..Header::new(Algorithm::HS256) },
                    &good,
                    &EncodingKey::from_secret(key.jwk().x.as_bytes()).unwrap(),
                )
                .unwrap(),
            ),
            (
                "tampered role",
                format!(
                    "{}.{}.{signature}",
                    valid.split('.').next().unwrap(),
                    b64(&serde_json::to_value(&admin).unwrap())
                ),
            ),
            ("wrong audience", key.sign(&Claims { aud: "other".into(), ..good.clone() }).unwrap()),
            ("wrong issuer", key.sign(&Claims { iss: "evil".into(), ..good.clone() }).unwrap()),
            ("garbage", "not.a.token".into()),
            ("empty", String::new()),
        ];
        for (name, token) in cases {
            let problem = verifier.verify(&token).await.expect_err(name);
            assert_eq!(problem.status, 401, "case {name}");
        }
    }

    #[tokio::test]
    async fn a_service_token_is_no_user_token_and_counts_only_for_its_callee() {
        let (key, _) = SigningKey::generate().unwrap();
        let verifier = verifier_for(&key).accepting_services("product-service");
        let now = chrono::Utc::now().timestamp();
        let service = |sub: &str, callee: &str| service::ServiceClaims {
            sub: sub.into(),
            iss: "shop-user".into(),
            aud: service::audience(callee),
            iat: now,
            exp: now + 300,
            jti: Uuid::now_v7(),
        };
        let order = key.sign(&service("order", "product")).unwrap();
        assert_eq!(
            verifier.verify_principal(&order).await.unwrap(),
            Principal::Service(ServiceCaller { service: "order", acting_for: None })
        );
        assert_eq!(verifier.verify(&order).await.unwrap_err().status, 401, "no REST route takes a service token");
        for (name, token) in [
            ("for another callee", key.sign(&service("order", "cart")).unwrap()),
            ("an unknown service", key.sign(&service("mallory", "product")).unwrap()),
        ] {
            assert_eq!(verifier.verify_principal(&token).await.unwrap_err().status, 401, "{name}");
        }
        let user = claims(600);
        let caller = verifier.verify_principal(&key.sign(&user).unwrap()).await.unwrap();
        assert_eq!(caller, Principal::User(Caller { user_id: user.sub, role: Role::Customer }));
        let not_accepting = verifier_for(&key);
        assert_eq!(not_accepting.verify_principal(&order).await.unwrap_err().status, 401);
    }

    #[test]
    fn bearer_header_forms() {
        let cases = [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
            ("abc", None),
        ];
        for (value, expected) in cases {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, value.parse().unwrap());
            assert_eq!(bearer_token(&headers).ok(), expected, "case {value:?}");
        }
        assert!(bearer_token(&HeaderMap::new()).is_err());
    }

    #[test]
    fn bad_pem_is_refused() {
        assert!(SigningKey::from_pem("nope").is_err());
        let rsa_like = pem::encode(&pem::Pem::new("RSA PRIVATE KEY", vec![1, 2, 3]));
        assert!(SigningKey::from_pem(&rsa_like).is_err());
        let junk = pem::encode(&pem::Pem::new("PRIVATE KEY", vec![1, 2, 3]));
        assert!(SigningKey::from_pem(&junk).is_err());
    }
}
