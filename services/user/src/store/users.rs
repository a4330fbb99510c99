//! The `users` table.

use chrono::{DateTime, Utc};
use shop_kit::auth::Role;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Error;

/// An account, as the service works with it. Its `Debug` shows no password hash and no
/// personal data.
#[derive(Clone)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for User {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("User")
            .field("id", &self.id)
            .field("email", &"[redacted]")
            .field("name", &"[redacted]")
            .field("role", &self.role)
            .field("password_hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    name: String,
    role: String,
    password_hash: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = Error;

    fn try_from(row: UserRow) -> Result<Self, Error> {
        let role = row.role.parse().map_err(|error: String| Error::Internal(anyhow::anyhow!(error)))?;
        Ok(Self {
            id: row.id,
            email: row.email,
            name: row.name,
            role,
            password_hash: row.password_hash,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

const COLUMNS: &str = "id, email, name, role, password_hash, created_at, updated_at";

pub struct NewUser<'a> {
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub role: Role,
}

/// Inserts an account; `Error::EmailTaken` if the address is in use.
pub(crate) async fn insert(connection: &mut PgConnection, user: &NewUser<'_>) -> Result<User, Error> {
    let row: UserRow = sqlx::query_as(&format!(
        "INSERT INTO users (id, email, name, password_hash, role) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(user.email)
    .bind(user.name)
    .bind(user.password_hash)
    .bind(user.role.as_str())
    .fetch_one(connection)
    .await
    .map_err(|error| {
        if shop_kit::db::violates(&error, "users_email_key") { Error::EmailTaken } else { Error::from(error) }
    })?;
    row.try_into()
}

pub(crate) async fn by_id(connection: &mut PgConnection, id: Uuid) -> Result<Option<User>, Error> {
    let row: Option<UserRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(connection)
        .await?;
    row.map(User::try_from).transpose()
}

pub(crate) async fn by_email(connection: &mut PgConnection, email: &str) -> Result<Option<User>, Error> {
    let row: Option<UserRow> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM users WHERE email = $1"))
        .bind(email)
        .fetch_optional(connection)
        .await?;
    row.map(User::try_from).transpose()
}

/// What `PATCH /v1/users/me` and the admin bootstrap may change.
#[derive(Default)]
pub struct UserChanges<'a> {
    pub name: Option<&'a str>,
    pub password_hash: Option<&'a str>,
    pub role: Option<Role>,
}

pub(crate) async fn update(connection: &mut PgConnection, id: Uuid, changes: &UserChanges<'_>) -> Result<User, Error> {
    let row: Option<UserRow> = sqlx::query_as(&format!(
        "UPDATE users SET name = COALESCE($2, name), password_hash = COALESCE($3, password_hash), \
         role = COALESCE($4, role), updated_at = now() WHERE id = $1 RETURNING {COLUMNS}"
    ))
    .bind(id)
    .bind(changes.name)
    .bind(changes.password_hash)
    .bind(changes.role.map(Role::as_str))
    .fetch_optional(connection)
    .await?;
    row.ok_or(Error::UserNotFound)?.try_into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_no_password_hash_and_no_personal_data() {
        let user = User {
            id: Uuid::now_v7(),
            email: "ada@example.com".into(),
            name: "Ada Lovelace".into(),
            role: Role::Customer,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let shown = format!("{user:?}");
        for secret in ["argon2id", "ada@example.com", "Lovelace"] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
        assert!(shown.contains(&user.id.to_string()), "{shown}");
    }
}
