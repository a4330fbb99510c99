//! The `refresh_tokens` table: rotation and reuse detection.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::Error;

/// A stored refresh token, found by the hash of its secret.
pub struct RefreshToken {
    pub id: Uuid,
    pub family_id: Uuid,
    pub user_id: Uuid,
}

/// What presenting a refresh token led to.
pub enum Consumed {
    /// It was live: now consumed; the caller issues its successor in the same transaction.
    Live(RefreshToken),
    /// It had been consumed before: the family is now revoked.
    Reused,
    /// Unknown, expired or revoked.
    Invalid,
}

pub(crate) async fn insert(
    connection: &mut PgConnection,
    family_id: Uuid,
    user_id: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(family_id)
    .bind(user_id)
    .bind(token_hash)
    .bind(expires_at)
    .execute(connection)
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    expired: bool,
    used: bool,
    revoked: bool,
}

/// Consumes the token with this hash. Run inside a transaction: the row lock makes two
/// concurrent presentations of one token count as a reuse.
pub(crate) async fn consume(connection: &mut PgConnection, token_hash: &[u8]) -> Result<Consumed, Error> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT id, family_id, user_id, expires_at <= now() AS expired, used_at IS NOT NULL AS used, \
         revoked_at IS NOT NULL AS revoked FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
    )
    .bind(token_hash)
    .fetch_optional(&mut *connection)
    .await?;
    let Some(row) = row else {
        return Ok(Consumed::Invalid);
    };
    if row.revoked || row.expired {
        return Ok(Consumed::Invalid);
    }
    if row.used {
        revoke_family(connection, row.family_id).await?;
        tracing::warn!(user.id = %row.user_id, token.family = %row.family_id, "refresh token reused; family revoked");
        return Ok(Consumed::Reused);
    }
    sqlx::query("UPDATE refresh_tokens SET used_at = now() WHERE id = $1").bind(row.id).execute(connection).await?;
    Ok(Consumed::Live(RefreshToken { id: row.id, family_id: row.family_id, user_id: row.user_id }))
}

pub(crate) async fn revoke_family(connection: &mut PgConnection, family_id: Uuid) -> Result<(), Error> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL")
        .bind(family_id)
        .execute(connection)
        .await?;
    Ok(())
}

/// The family of the token with this hash, if any.
pub(crate) async fn family_of(connection: &mut PgConnection, token_hash: &[u8]) -> Result<Option<Uuid>, Error> {
    Ok(sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
        .bind(token_hash)
        .fetch_optional(connection)
        .await?)
}

/// Revokes every token of a user (after a password change).
pub(crate) async fn revoke_user(connection: &mut PgConnection, user_id: Uuid) -> Result<(), Error> {
    sqlx::query("UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .execute(connection)
        .await?;
    Ok(())
}
