-- An Idempotency-Key claim is a lease: a claim with no answer older than IDEMPOTENCY_LEASE
-- (its request died between claiming the key and placing the order) is taken over by a
-- retry with the same key and body. Keys are deleted after IDEMPOTENCY_KEY_RETENTION.
ALTER TABLE idempotency_keys ADD COLUMN claimed_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);
