-- The trace context of the event that made the work due (OrderPlaced for a charge,
-- OrderCancelled for a refund), in W3C text form: the worker continues that trace when it
-- calls the provider and publishes the outcome, so one checkout stays one trace.
ALTER TABLE payments ADD COLUMN traceparent text, ADD COLUMN tracestate text;
