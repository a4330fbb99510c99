-- One payment per order (the unique order_id is what makes a redelivered OrderPlaced
-- harmless even before the inbox). Amounts are integer minor units.
CREATE TABLE payments (
    id             uuid        PRIMARY KEY,
    order_id       uuid        NOT NULL CONSTRAINT payments_order_key UNIQUE,
    user_id        uuid        NOT NULL,
    amount         bigint      NOT NULL,
    currency       text        NOT NULL,
    status         text        NOT NULL
        CONSTRAINT payments_status_check CHECK (status IN ('succeeded', 'failed', 'refunded')),
    failure_reason text,
    attempts       integer     NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX payments_user_idx ON payments (user_id, id);
