-- The order (or refund) a notification is about, for order events. A customer hears of each
-- step of an order once: an order cancelled while its payment was in flight is cancelled
-- again by the late payment (OrderCancelled{refund}, so that the money goes back), and that
-- second event must not be a second "your order was cancelled" message; the refund has its
-- own. Older rows and account messages have no order.
ALTER TABLE notifications ADD COLUMN order_id uuid;

CREATE UNIQUE INDEX notifications_order_template_key ON notifications (order_id, template)
    WHERE order_id IS NOT NULL;
