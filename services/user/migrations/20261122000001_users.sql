-- Accounts. Emails are stored trimmed and lower-cased; uniqueness is by constraint name
-- (users_email_key), which the service maps to 409 email_taken.
CREATE TABLE users (
    id            uuid        PRIMARY KEY,
    email         text        NOT NULL CONSTRAINT users_email_key UNIQUE,
    name          text        NOT NULL,
    password_hash text        NOT NULL,
    role          text        NOT NULL CONSTRAINT users_role_check CHECK (role IN ('customer', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Refresh tokens: only the SHA-256 of the secret is kept. Tokens of one login form a
-- family; each refresh consumes one token (used_at) and adds its successor. Presenting a
-- consumed token revokes the whole family (reuse detection).
CREATE TABLE refresh_tokens (
    id         uuid        PRIMARY KEY,
    family_id  uuid        NOT NULL,
    user_id    uuid        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash bytea       NOT NULL CONSTRAINT refresh_tokens_hash_key UNIQUE,
    expires_at timestamptz NOT NULL,
    used_at    timestamptz,
    revoked_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_user_idx ON refresh_tokens (user_id);
