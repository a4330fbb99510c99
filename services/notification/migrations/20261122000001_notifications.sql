-- Where to write to: learnt from UserRegistered.
CREATE TABLE recipients (
    user_id uuid PRIMARY KEY,
    email   text NOT NULL,
    name    text NOT NULL
);

-- One notification per event (the event id is unique), delivered by a worker that
-- records every attempt and retries with backoff.
CREATE TABLE notifications (
    id              uuid        PRIMARY KEY,
    event_id        uuid        NOT NULL CONSTRAINT notifications_event_key UNIQUE,
    user_id         uuid        NOT NULL,
    channel         text        NOT NULL CONSTRAINT notifications_channel_check CHECK (channel IN ('email', 'log')),
    recipient       text,
    template        text        NOT NULL,
    subject         text        NOT NULL,
    body            text        NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CONSTRAINT notifications_status_check CHECK (status IN ('pending', 'sent', 'failed')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);

CREATE INDEX notifications_due_idx ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX notifications_user_idx ON notifications (user_id, id);

CREATE TABLE delivery_attempts (
    notification_id uuid        NOT NULL REFERENCES notifications (id) ON DELETE CASCADE,
    attempt         integer     NOT NULL,
    succeeded       boolean     NOT NULL,
    error           text,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (notification_id, attempt)
);
