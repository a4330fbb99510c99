//! `/v1/users`: register, read and change one's own account; admins read any.

use axum::{
    Json,
    extract::{Path, State},
    http::{StatusCode, header},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shop_kit::{
    auth::{Caller, Role},
    error::{ApiJson, FieldError, Problem, parse_id},
    server::ClientIp,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    app::AppState,
    domain::{Email, Password, UserName},
    error::Error,
    store::{self, User, UserChanges},
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(register)).routes(routes!(get_me, update_me)).routes(routes!(get_user))
}

/// An account as clients see it (never the password hash).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(user: User) -> Self {
        Self {
            id: user.id,
            email: user.email,
            name: user.name,
            role: user.role,
            created_at: user.created_at,
            updated_at: user.updated_at,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct RegisterRequest {
    /// `local@domain.tld`, at most 254 characters; stored trimmed and lower-cased.
    #[schema(format = Email, max_length = 254)]
    email: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    /// At most 100 characters, not only spaces, no control characters; stored trimmed.
    #[schema(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: String,
}

/// Create an account (role `customer`).
#[utoipa::path(post, path = "/v1/users", tag = "users", request_body = RegisterRequest, responses(
    (status = 201, description = "created", body = UserResponse),
    (status = 409, description = "email_taken", body = Problem, content_type = "application/problem+json"),
    (status = 422, description = "validation_failed, naming the fields", body = Problem, content_type = "application/problem+json"),
    (status = 429, description = "rate_limited: too many registrations from this address; see Retry-After", body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn register(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    ApiJson(body): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, Error> {
    let mut errors = Vec::new();
    let email = Email::parse(&body.email).map_err(|message| errors.push(FieldError::new("email", message))).ok();
    let password =
        Password::parse(&body.password).map_err(|message| errors.push(FieldError::new("password", message))).ok();
    let name = UserName::parse(&body.name).map_err(|message| errors.push(FieldError::new("name", message))).ok();
    let (Some(email), Some(password), Some(name)) = (email, password, name) else {
        return Err(Error::Validation(errors));
    };
    // Before the expensive part: each registration costs an argon2 hash (19 MiB, tens of ms).
    super::within(&state.rates().register, &shop_kit::client_ip::limit_key(ip)).await?;
    let password_hash = state.hasher().hash(&password).await?;
    let new_user = store::NewUser {
        email: email.as_str(),
        name: name.as_str(),
        password_hash: &password_hash,
        role: Role::Customer,
    };
    // The account and its UserRegistered event commit together, or not at all.
    let mut transaction = state.pool().begin().await.map_err(Error::from)?;
    let user = store::users::insert(&mut transaction, &new_user).await?;
    let event = state.topics().event(user.id.to_string(), &crate::events::registered(&user));
    shop_kit::events::enqueue(&mut transaction, &event).await.map_err(Error::from)?;
    transaction.commit().await.map_err(Error::from)?;
    tracing::info!(user.id = %user.id, "account registered");
    let location = format!("/v1/users/{}", user.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(UserResponse::from(user))))
}

/// The caller's account.
#[utoipa::path(get, path = "/v1/users/me", tag = "users", security(("bearer" = [])), responses(
    (status = 200, body = UserResponse),
    (status = 401, body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn get_me(State(state): State<AppState>, caller: Caller) -> Result<Json<UserResponse>, Error> {
    let mut connection = state.pool().acquire().await.map_err(Error::from)?;
    let user = store::users::by_id(&mut connection, caller.user_id).await?.ok_or(Error::UserNotFound)?;
    Ok(Json(user.into()))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct UpdateMeRequest {
    /// At most 100 characters, not only spaces, no control characters; stored trimmed.
    #[schema(
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^ \u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    name: Option<String>,
    /// A new password, 8 to 128 characters; needs `current_password` (403 without it or with
    /// a wrong one). Signs out every other session.
    #[schema(min_length = 8, max_length = 128)]
    password: Option<String>,
    #[schema(max_length = 128)]
    current_password: Option<String>,
}

/// Change the caller's name and/or password; absent (or null) fields stay as they are, so `{}`
/// changes nothing and answers the account as it is.
#[utoipa::path(patch, path = "/v1/users/me", tag = "users", security(("bearer" = [])), request_body = UpdateMeRequest,
    responses(
        (status = 200, body = UserResponse),
        (status = 403, description = "current_password_mismatch: a new password without the current one, or with a wrong one", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "rate_limited: too many password changes on this account; see Retry-After", body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn update_me(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<UpdateMeRequest>,
) -> Result<Json<UserResponse>, Error> {
    let mut errors = Vec::new();
    let name = body
        .name
        .as_deref()
        .map(UserName::parse)
        .transpose()
        .map_err(|message| errors.push(FieldError::new("name", message)))
        .ok()
        .flatten();
    let password = body
        .password
        .as_deref()
        .map(Password::parse)
        .transpose()
        .map_err(|message| errors.push(FieldError::new("password", message)))
        .ok()
        .flatten();
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }

    if password.is_some() {
        // Each try verifies the current password (argon2): a stolen access token must not
        // become an unlimited oracle for it.
        super::within(&state.rates().password_change, &caller.user_id.to_string()).await?;
    }
    let mut connection = state.pool().acquire().await.map_err(Error::from)?;
    let user = store::users::by_id(&mut connection, caller.user_id).await?.ok_or(Error::UserNotFound)?;
    let new_hash = match (&password, body.current_password.as_deref()) {
        (Some(password), Some(current)) => {
            if current.chars().count() > crate::domain::PASSWORD_MAX_LEN
                || !state.hasher().verify(current, Some(&user.password_hash)).await?
            {
                return Err(Error::WrongCurrentPassword);
            }
            Some(state.hasher().hash(password).await?)
        }
        (Some(_), None) => return Err(Error::WrongCurrentPassword),
        (None, _) => None,
    };
    if name.is_none() && new_hash.is_none() {
        return Ok(Json(user.into()));
    }
    let mut transaction = state.pool().begin().await.map_err(Error::from)?;
    let changes =
        UserChanges { name: name.as_ref().map(UserName::as_str), password_hash: new_hash.as_deref(), role: None };
    let user = store::users::update(&mut transaction, caller.user_id, &changes).await?;
    if new_hash.is_some() {
        store::refresh_tokens::revoke_user(&mut transaction, caller.user_id).await?;
    }
    transaction.commit().await.map_err(Error::from)?;
    Ok(Json(user.into()))
}

/// One account: your own, or any for an admin.
#[utoipa::path(get, path = "/v1/users/{id}", tag = "users", security(("bearer" = [])), params(("id" = Uuid, Path)),
    responses(
        (status = 200, body = UserResponse),
        (status = 403, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
))]
pub(super) async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserResponse>, Error> {
    let id = parse_id(&id, "user_not_found")?;
    caller.require_owner_or_admin(id)?;
    let mut connection = state.pool().acquire().await.map_err(Error::from)?;
    let user = store::users::by_id(&mut connection, id).await?.ok_or(Error::UserNotFound)?;
    Ok(Json(user.into()))
}
