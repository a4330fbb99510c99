//! The messaging kit's tables come from versioned migrations applied with each service's
//! own: a database made before (tables created by start-up code) migrates cleanly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "tests fail loudly on purpose")]

use shop_kit::events::{KafkaConfig, enqueue};
use shop_proto::shop::events::v1::UserRegistered;
use shop_testkit::TestDb;

/// A service's own migrations (the `effects` table), applied with the kit's.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/fixtures/migrations");

fn event(prefix: &str, user: &str) -> shop_kit::events::Event {
    let mut config = KafkaConfig::for_brokers("127.0.0.1:9092");
    config.topic_prefix = prefix.to_owned();
    config.topics().event(user, &UserRegistered { user_id: user.into(), ..UserRegistered::default() })
}

/// The `outbox` and `inbox` tables as start-up code made them before they were migrations.
const TABLES_MADE_BY_CODE: &str = "CREATE TABLE outbox (
        seq bigserial PRIMARY KEY, id uuid NOT NULL UNIQUE, topic text NOT NULL, key text NOT NULL,
        ce_type text NOT NULL, ce_source text NOT NULL, payload bytea NOT NULL, traceparent text, tracestate text,
        created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz);
    CREATE INDEX outbox_pending_idx ON outbox (topic, seq) WHERE published_at IS NULL;
    CREATE TABLE inbox (consumer text NOT NULL, ce_id uuid NOT NULL, processed_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (consumer, ce_id));";

#[tokio::test]
async fn a_database_made_before_the_event_tables_were_migrations_migrates_cleanly() {
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    // The service's own migrations by sqlx, the event tables by code, with rows in them.
    MIGRATOR.run(&pool).await.unwrap();
    sqlx::raw_sql(TABLES_MADE_BY_CODE).execute(&pool).await.unwrap();
    let mut transaction = pool.begin().await.unwrap();
    enqueue(&mut transaction, &event("old.", "kept")).await.unwrap();
    transaction.commit().await.unwrap();
    sqlx::query("INSERT INTO inbox (consumer, ce_id) VALUES ('old', gen_random_uuid())").execute(&pool).await.unwrap();

    shop_kit::db::prepare(&pool, &MIGRATOR).await.unwrap();
    shop_kit::db::prepare(&pool, &MIGRATOR).await.unwrap();
    let rows: (i64, i64) = sqlx::query_as("SELECT (SELECT count(*) FROM outbox), (SELECT count(*) FROM inbox)")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(rows, (1, 1), "the rows made before are kept");
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version").fetch_all(&pool).await.unwrap();
    let expected: Vec<i64> =
        shop_kit::events::MIGRATOR.iter().chain(MIGRATOR.iter()).map(|migration| migration.version).collect();
    let mut expected = expected;
    expected.sort_unstable();
    assert_eq!(versions, expected, "every migration recorded once");

    // A fresh database gets the tables from the migration.
    let fresh = TestDb::new().await;
    let fresh_pool = sqlx::PgPool::connect(fresh.url()).await.unwrap();
    shop_kit::db::prepare(&fresh_pool, &MIGRATOR).await.unwrap();
    let mut transaction = fresh_pool.begin().await.unwrap();
    enqueue(&mut transaction, &event("new.", "first")).await.unwrap();
    transaction.commit().await.unwrap();
}

/// A rollback: the database was migrated by a newer release (a migration this binary does
/// not have); the older release's migration Job must succeed, not refuse the schema.
#[tokio::test]
async fn an_older_release_migrates_a_database_a_newer_one_migrated() {
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    shop_kit::db::prepare(&pool, &MIGRATOR).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time)
         VALUES (99990101000000, 'a newer release''s column', true, '\\x00'::bytea, 1)",
    )
    .execute(&pool)
    .await
    .unwrap();
    shop_kit::db::prepare(&pool, &MIGRATOR).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations").fetch_one(&pool).await.unwrap();
    assert_eq!(applied as usize, MIGRATOR.iter().count() + shop_kit::events::MIGRATOR.iter().count() + 1);
    pool.close().await;
}
