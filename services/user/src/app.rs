//! Builds the service (state, server) and runs it.

use std::{sync::Arc, time::Duration};

use anyhow::Context as _;
use chrono::Utc;
use shop_kit::{
    auth::{AuthState, Claims, GrpcAuth, Jwks, KeySource, Role, SigningKeys, Verifier, service::ServiceTokenIssuer},
    events::{Relay, Topics},
    ratelimit::{Limit, Limits},
    retention::Retention,
    server::{Check, Criticality, Server},
    service::{Service, ServiceConfig},
};
use shop_proto::{contracts, shop::user::v1::user_service_server::UserServiceServer};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    SERVICE,
    config::{AdminAccount, Config},
    domain::{PasswordHasher, RefreshSecret, hash_is_current},
    error::Error,
    http::TokenResponse,
    store::{self, LoginLimiter, NewUser, User, UserChanges},
};

/// The request rate limits (`RATE_LIMIT_*`), shared by the replicas through Redis.
pub struct Rates {
    /// Per client address.
    pub register: Limit,
    /// Per client address, every attempt.
    pub login: Limit,
    /// Per client address.
    pub refresh: Limit,
    /// Per account.
    pub password_change: Limit,
    /// Per client address.
    pub service_token: Limit,
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    hasher: PasswordHasher,
    limiter: LoginLimiter,
    rates: Rates,
    signing_keys: SigningKeys,
    verifier: Arc<Verifier>,
    issuer: String,
    audience: String,
    access_token_ttl: Duration,
    refresh_token_ttl: Duration,
    topics: Topics,
    service_tokens: ServiceTokenIssuer,
}

impl AppState {
    pub fn pool(&self) -> &PgPool {
        &self.inner.pool
    }

    pub fn hasher(&self) -> &PasswordHasher {
        &self.inner.hasher
    }

    pub fn limiter(&self) -> &LoginLimiter {
        &self.inner.limiter
    }

    pub fn rates(&self) -> &Rates {
        &self.inner.rates
    }

    /// The full name of the user topic (with any test prefix).
    pub fn topics(&self) -> &Topics {
        &self.inner.topics
    }

    pub fn jwks(&self) -> Jwks {
        self.inner.signing_keys.jwks()
    }

    /// Answers a service's token request (`POST /v1/oauth/token`).
    pub fn issue_service_token(
        &self,
        headers: &axum::http::HeaderMap,
        body: &[u8],
    ) -> Result<shop_kit::auth::service::ServiceTokenResponse, shop_kit::auth::service::OAuthError> {
        self.inner.service_tokens.issue(headers, body, self.inner.signing_keys.current())
    }

    /// A new access token and a refresh token in `family`, stored through `connection`.
    pub async fn issue_tokens(
        &self,
        connection: &mut PgConnection,
        user: &User,
        family: Uuid,
    ) -> Result<TokenResponse, Error> {
        let now = Utc::now();
        let ttl = self.inner.access_token_ttl;
        let claims = Claims {
            sub: user.id,
            role: user.role,
            iss: self.inner.issuer.clone(),
            aud: self.inner.audience.clone(),
            iat: now.timestamp(),
            exp: now.timestamp() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX / 2),
            jti: Uuid::now_v7(),
        };
        let access_token = self.inner.signing_keys.current().sign(&claims)?;
        let secret = RefreshSecret::generate();
        let refresh_ttl =
            chrono::Duration::from_std(self.inner.refresh_token_ttl).unwrap_or(chrono::Duration::days(30));
        store::refresh_tokens::insert(connection, family, user.id, &secret.hash(), now + refresh_ttl).await?;
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer".into(),
            expires_in: ttl.as_secs(),
            refresh_token: secret.reveal().to_owned(),
        })
    }
}

impl AuthState for AppState {
    fn verifier(&self) -> &Verifier {
        &self.inner.verifier
    }
}

/// The built service: bound, ready to run.
impl ServiceConfig for Config {
    fn telemetry(&self) -> &shop_kit::config::TelemetryConfig {
        &self.telemetry
    }
}

/// Loads the key, connects, migrates, ensures the admin account and binds; the service then
/// runs with [`Service::run`] (the server and the outbox relay).
pub async fn build(mut config: Config) -> anyhow::Result<Service> {
    let signing_keys = config.load_signing_keys()?;
    let pool = shop_kit::service::database(&config.database, &crate::MIGRATOR).await?;
    // One producer for the outbox and readiness.
    let publisher = shop_kit::service::broker(&config.kafka, &[contracts::USER]).await?;
    let topics = config.kafka.topics();
    let kafka_ready = Check::kafka(publisher.clone(), topics.name(contracts::USER));
    let redis = shop_kit::cache::connect(&config.redis).await?;
    let hasher = PasswordHasher::new(config.hash_concurrency)?;
    if let Some(admin) = &config.admin {
        ensure_admin(&pool, &hasher, admin).await?;
    }
    let verifier =
        Arc::new(Verifier::new(&config.auth, KeySource::from_jwks(&signing_keys.jwks())).accepting_services(SERVICE));
    let service_clients = std::mem::take(&mut config.service_clients);
    if service_clients.names().is_empty() {
        tracing::warn!("SERVICE_CLIENTS_DIR names no service: no service can get a token, internal calls will fail");
    } else {
        tracing::info!(clients = ?service_clients.names(), "service clients registered");
    }
    let state = AppState {
        inner: Arc::new(Inner {
            pool: pool.clone(),
            hasher,
            limiter: LoginLimiter::new(
                redis.clone(),
                config.redis.key_prefix.clone(),
                config.login_limits,
                config.redis.timeout,
            ),
            rates: {
                let limits = Limits::new(redis.clone(), config.redis.key_prefix.clone(), config.redis.timeout);
                Rates {
                    register: limits.limit("register", config.rates.register),
                    login: limits.limit("login", config.rates.login),
                    refresh: limits.limit("refresh", config.rates.refresh),
                    password_change: limits.limit("password_change", config.rates.password_change),
                    service_token: limits.limit("service_token", config.rates.service_token),
                }
            },
            signing_keys,
            verifier: Arc::clone(&verifier),
            issuer: config.auth.issuer.clone(),
            audience: config.auth.audience.clone(),
            access_token_ttl: config.access_token_ttl,
            refresh_token_ttl: config.refresh_token_ttl,
            topics,
            service_tokens: ServiceTokenIssuer::new(
                service_clients,
                config.auth.issuer.clone(),
                config.service_token_ttl,
            ),
        }),
    };
    let grpc = GrpcAuth::new(UserServiceServer::new(crate::grpc::UserGrpc::new(state.clone())), verifier);
    let server = Server::new(SERVICE, config.http)
        .api(crate::http::api(state))
        .grpc(grpc)
        .check(Check::postgres(pool.clone()))
        .check(kafka_ready)
        .check(Check::redis(redis, Criticality::Optional))
        .bind()
        .await?;
    let relay = Relay::new(pool.clone(), &publisher);
    let retention = Retention::new(pool.clone(), &config.retention);
    Ok(Service::new(server)
        .background("outbox relay", |shutdown| relay.run(shutdown))
        .background("retention", |shutdown| retention.run(shutdown))
        .flush(&publisher)
        .close(&pool))
}

/// Creates the configured admin account, or makes the existing account an admin with the
/// configured password. Whenever that changes an account (a customer promoted, a password
/// reset), every session it had is revoked in the same transaction: whoever registered the
/// admin's email first keeps neither a refresh token nor a password that works.
async fn ensure_admin(pool: &PgPool, hasher: &PasswordHasher, admin: &AdminAccount) -> anyhow::Result<()> {
    let mut connection = pool.acquire().await.context("cannot reach the database")?;
    let existing = store::users::by_email(&mut connection, admin.email.as_str()).await.map_err(anyhow_error)?;
    match existing {
        None => {
            let hash = hasher.hash(&admin.password).await?;
            let new_user =
                NewUser { email: admin.email.as_str(), name: "Administrator", password_hash: &hash, role: Role::Admin };
            match store::users::insert(&mut connection, &new_user).await {
                // Another replica created it at the same moment.
                Ok(_) | Err(Error::EmailTaken) => {}
                Err(error) => return Err(anyhow_error(error)),
            }
            tracing::info!(admin.email = %admin.email.as_str(), "admin account created");
        }
        Some(user) => {
            let password_ok = hasher.verify(admin.password.expose(), Some(&user.password_hash)).await?;
            let rehash = !password_ok || !hash_is_current(&user.password_hash);
            let hash = if rehash { Some(hasher.hash(&admin.password).await?) } else { None };
            if user.role != Role::Admin || hash.is_some() {
                let promoted = user.role != Role::Admin;
                let changes = UserChanges { name: None, password_hash: hash.as_deref(), role: Some(Role::Admin) };
                let mut transaction =
                    sqlx::Connection::begin(&mut *connection).await.context("cannot reach the database")?;
                store::users::update(&mut transaction, user.id, &changes).await.map_err(anyhow_error)?;
                store::refresh_tokens::revoke_user(&mut transaction, user.id).await.map_err(anyhow_error)?;
                transaction.commit().await.context("cannot reach the database")?;
                if promoted {
                    tracing::warn!(admin.email = %admin.email.as_str(), user.id = %user.id,
                        "an existing customer account was made the admin from configuration; its sessions were revoked and its password replaced");
                } else {
                    tracing::info!(admin.email = %admin.email.as_str(), "admin password reset from configuration; its sessions were revoked");
                }
            }
        }
    }
    Ok(())
}

fn anyhow_error(error: Error) -> anyhow::Error {
    match error {
        Error::Internal(cause) => cause,
        other => anyhow::anyhow!("{other}"),
    }
}
