-- Orders and their lines. Status follows the state machine pending_payment → confirmed |
-- cancelled, confirmed → cancelled (refund); the service refuses any other change.
CREATE TABLE orders (
    id               uuid        PRIMARY KEY,
    user_id          uuid        NOT NULL,
    status           text        NOT NULL
        CONSTRAINT orders_status_check CHECK (status IN ('pending_payment', 'confirmed', 'cancelled')),
    total_amount     bigint      NOT NULL CONSTRAINT orders_total_check CHECK (total_amount >= 0),
    currency         text        NOT NULL,
    shipping_address jsonb       NOT NULL,
    failure_reason   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX orders_user_idx ON orders (user_id, id);

CREATE TABLE order_items (
    order_id          uuid    NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    product_id        uuid    NOT NULL,
    name              text    NOT NULL,
    quantity          integer NOT NULL CONSTRAINT order_items_quantity_check CHECK (quantity > 0),
    unit_price_amount bigint  NOT NULL,
    currency          text    NOT NULL,
    PRIMARY KEY (order_id, product_id)
);

-- POST /v1/orders with an Idempotency-Key: the first request's answer, replayed to retries.
CREATE TABLE idempotency_keys (
    user_id         uuid        NOT NULL,
    key             text        NOT NULL,
    request_hash    bytea       NOT NULL,
    response_status integer,
    response_body   jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
