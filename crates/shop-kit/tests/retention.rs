//! The retention job deletes what is old enough, in batches, and nothing else: published
//! outbox rows past their age (never an unpublished one), inbox rows past theirs, and a
//! service's own table by its rule.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly on purpose")]

use std::time::Duration;

use shop_kit::retention::{Retention, RetentionConfig, Rule};
use shop_testkit::TestDb;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("tests/fixtures/migrations");

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn old_rows_are_deleted_in_batches_and_nothing_else() {
    shop_testkit::init_tracing();
    let db = TestDb::new().await;
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    shop_kit::db::prepare(&pool, &MIGRATOR).await.unwrap();
    // 25 rows of each kind: published two days ago, published just now, unpublished from
    // two days ago (the broker was away); inbox rows from eight days ago and from now.
    sqlx::raw_sql(
        "INSERT INTO outbox (id, topic, key, ce_type, ce_source, payload, created_at, published_at)
           SELECT gen_random_uuid(), 't', 'k', 'x', 's', '', now() - interval '2 days', now() - interval '2 days'
           FROM generate_series(1, 25);
         INSERT INTO outbox (id, topic, key, ce_type, ce_source, payload, published_at)
           SELECT gen_random_uuid(), 't', 'k', 'x', 's', '', now() FROM generate_series(1, 25);
         INSERT INTO outbox (id, topic, key, ce_type, ce_source, payload, created_at)
           SELECT gen_random_uuid(), 't', 'k', 'x', 's', '', now() - interval '2 days' FROM generate_series(1, 25);
         INSERT INTO inbox (consumer, ce_id, processed_at)
           SELECT 'c', gen_random_uuid(), now() - interval '8 days' FROM generate_series(1, 25);
         INSERT INTO inbox (consumer, ce_id) SELECT 'c', gen_random_uuid() FROM generate_series(1, 25);
         CREATE TABLE sessions (id bigserial PRIMARY KEY, created_at timestamptz NOT NULL);
         INSERT INTO sessions (created_at) SELECT now() - interval '2 hours' FROM generate_series(1, 25);
         INSERT INTO sessions (created_at) SELECT now() FROM generate_series(1, 25);",
    )
    .execute(&pool)
    .await
    .unwrap();
    let config = RetentionConfig { batch: 10, ..RetentionConfig::default() };
    let retention = Retention::new(pool.clone(), &config).rule(Rule::new(
        "sessions",
        "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE created_at < now() - $1 * interval '1 second' LIMIT $2)",
        Duration::from_secs(3600),
    ));

    // 25 old rows in batches of 10: three statements each, one pass deletes them all.
    let deleted = retention.prune().await;
    assert_eq!(deleted, [("outbox", 25), ("inbox", 25), ("sessions", 25)]);
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox WHERE published_at IS NULL").await, 25, "unpublished kept");
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 50);
    assert_eq!(count(&pool, "SELECT count(*) FROM inbox").await, 25);
    assert_eq!(count(&pool, "SELECT count(*) FROM sessions").await, 25);
    assert_eq!(retention.prune().await, [("outbox", 0), ("inbox", 0), ("sessions", 0)], "a second pass finds nothing");

    // A rule that fails (its table is gone) is skipped; the others still run.
    sqlx::raw_sql("DROP TABLE sessions; UPDATE inbox SET processed_at = now() - interval '8 days'")
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(retention.prune().await, [("outbox", 0), ("inbox", 25), ("sessions", 0)]);
}
