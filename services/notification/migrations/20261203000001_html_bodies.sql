-- Each message is sent with a plain-text and an HTML body (multipart/alternative). Rows made
-- before this migration have no HTML body and are sent as plain text.
ALTER TABLE notifications ADD COLUMN html_body text;
