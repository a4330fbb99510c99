-- The catalog. Prices are integer minor units; search is a weighted tsvector (name A,
-- description B) so that a name match ranks above a description match.
CREATE TABLE products (
    id           uuid        PRIMARY KEY,
    sku          text        NOT NULL CONSTRAINT products_sku_key UNIQUE,
    name         text        NOT NULL,
    description  text        NOT NULL DEFAULT '',
    price_amount bigint      NOT NULL CONSTRAINT products_price_check CHECK (price_amount >= 0),
    currency     text        NOT NULL CONSTRAINT products_currency_check CHECK (currency ~ '^[A-Z]{3}$'),
    image_url    text,
    active       boolean     NOT NULL DEFAULT true,
    deleted_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    search       tsvector    GENERATED ALWAYS AS (
        setweight(to_tsvector('english', name), 'A') || setweight(to_tsvector('english', description), 'B')
    ) STORED
);

CREATE INDEX products_search_idx ON products USING gin (search);
CREATE INDEX products_listed_idx ON products (id) WHERE active AND deleted_at IS NULL;

CREATE TABLE categories (
    id   uuid PRIMARY KEY,
    slug text NOT NULL CONSTRAINT categories_slug_key UNIQUE,
    name text NOT NULL
);

CREATE TABLE product_categories (
    product_id  uuid NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    category_id uuid NOT NULL REFERENCES categories (id) ON DELETE CASCADE,
    PRIMARY KEY (product_id, category_id)
);

CREATE INDEX product_categories_category_idx ON product_categories (category_id, product_id);

-- Inventory: available = on_hand - reserved, never negative (the checks are the last line
-- of defence; the reservation UPDATE is conditional).
CREATE TABLE inventory (
    product_id uuid    PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
    on_hand    integer NOT NULL DEFAULT 0,
    reserved   integer NOT NULL DEFAULT 0,
    CONSTRAINT inventory_balance_check CHECK (reserved >= 0 AND on_hand >= reserved)
);

-- One row per ReserveStock order_id: the answer a retry gets.
CREATE TABLE reservation_requests (
    order_id   uuid        PRIMARY KEY,
    owner_id   uuid        NOT NULL,
    outcome    text        NOT NULL CONSTRAINT reservation_requests_outcome_check CHECK (outcome IN ('reserved', 'rejected')),
    detail     text        NOT NULL DEFAULT '',
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The held units of each order, per product.
CREATE TABLE reservations (
    order_id    uuid        NOT NULL REFERENCES reservation_requests (order_id) ON DELETE CASCADE,
    product_id  uuid        NOT NULL REFERENCES products (id),
    quantity    integer     NOT NULL CONSTRAINT reservations_quantity_check CHECK (quantity > 0),
    status      text        NOT NULL DEFAULT 'held'
        CONSTRAINT reservations_status_check CHECK (status IN ('held', 'committed', 'released', 'expired')),
    expires_at  timestamptz NOT NULL,
    settled_at  timestamptz,
    PRIMARY KEY (order_id, product_id)
);

CREATE INDEX reservations_expiry_idx ON reservations (expires_at) WHERE status = 'held';
