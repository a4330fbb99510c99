-- Finished reservation requests (rejected, or every hold released, expired or returned) are
-- deleted after RESERVATION_RETENTION, oldest first.
CREATE INDEX reservation_requests_created_idx ON reservation_requests (created_at);
