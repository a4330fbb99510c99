-- What the retention job (shop_kit::retention) deletes by: published outbox rows and inbox
-- rows by age, oldest first, without scanning the tables.
CREATE INDEX IF NOT EXISTS outbox_published_idx ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS inbox_processed_idx ON inbox (processed_at);
