-- A confirmed order that is cancelled gives its units back on hand: its reservation
-- becomes 'returned'.
ALTER TABLE reservations DROP CONSTRAINT reservations_status_check;
ALTER TABLE reservations ADD CONSTRAINT reservations_status_check
    CHECK (status IN ('held', 'committed', 'released', 'expired', 'returned'));
