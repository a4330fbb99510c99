-- The messaging kit's tables, in every service database that publishes or consumes events.
-- `IF NOT EXISTS`: databases made before this migration existed got the same tables from
-- code at start-up; for them this migration only records itself.
CREATE TABLE IF NOT EXISTS outbox (
    seq          bigserial   PRIMARY KEY,
    id           uuid        NOT NULL UNIQUE,
    topic        text        NOT NULL,
    key          text        NOT NULL,
    ce_type      text        NOT NULL,
    ce_source    text        NOT NULL,
    payload      bytea       NOT NULL,
    traceparent  text,
    tracestate   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending_idx ON outbox (topic, seq) WHERE published_at IS NULL;

CREATE TABLE IF NOT EXISTS inbox (
    consumer     text        NOT NULL,
    ce_id        uuid        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, ce_id)
);
