-- A refund the provider refuses for good ends in `refund_failed` (with the provider's reason
-- in failure_reason) instead of being asked about forever: a person gives the money back.
ALTER TABLE payments DROP CONSTRAINT payments_status_check;
ALTER TABLE payments ADD CONSTRAINT payments_status_check
    CHECK (status IN ('pending', 'succeeded', 'failed', 'refund_pending', 'refunded', 'refund_failed'));
