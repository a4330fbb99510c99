-- The trace context of the event the notification answers, in W3C text form: the delivery
-- worker continues that trace when it sends the message and publishes NotificationDelivered.
ALTER TABLE notifications ADD COLUMN traceparent text, ADD COLUMN tracestate text;
