-- Fulfilment: a confirmed order is shipped (carrier and tracking number recorded), then
-- delivered. pending_payment → confirmed → shipped → delivered; pending_payment and
-- confirmed may be cancelled, shipped and delivered may not.
ALTER TABLE orders DROP CONSTRAINT orders_status_check;
ALTER TABLE orders ADD CONSTRAINT orders_status_check
    CHECK (status IN ('pending_payment', 'confirmed', 'cancelled', 'shipped', 'delivered'));
ALTER TABLE orders
    ADD COLUMN carrier         text,
    ADD COLUMN tracking_number text,
    ADD COLUMN shipped_at      timestamptz,
    ADD COLUMN delivered_at    timestamptz;
