-- Payments in two steps (issue #13): the consumer records a `pending` payment and commits;
-- the payment worker claims due payments (a lease: `next_attempt_at` moved past the
-- provider calls, committed at once), calls the provider outside any transaction, and
-- records the outcome. A refund asked for moves a succeeded payment to `refund_pending`,
-- and the worker gives the money back the same way.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed', 'refund_pending', 'refunded'));

-- The provider's token for the card (never card data: the REST and event edges refuse
-- anything that looks like a card number). Cleared once the charge is recorded.
ALTER TABLE payments ADD COLUMN card_token text;
-- When the worker may next take the payment: now for a new one, later after a transient
-- failure (backoff) or while a worker holds it (the lease).
ALTER TABLE payments ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now();
-- Claims of the refund (`attempts` counts the charge's). A claim counts before the call,
-- so a payment claimed before with no outcome recorded may have reached the provider:
-- the worker looks its key up before calling again.
ALTER TABLE payments ADD COLUMN refund_attempts integer NOT NULL DEFAULT 0;

CREATE INDEX payments_due_idx ON payments (next_attempt_at) WHERE status IN ('pending', 'refund_pending');
