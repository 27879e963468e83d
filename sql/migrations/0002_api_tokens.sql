-- 0002 — API tokens: who may call the HTTP API, and as what.
--
-- Why hashed: the table is readable by whoever reads the database (backups, replicas,
-- operators in psql); a leaked row must not be a usable credential. Tokens are 256-bit
-- random strings, so one round of SHA-256 is enough (no password-style stretching needed:
-- there is nothing to brute-force). The token itself is shown once, at creation.
-- Why revoked_at instead of DELETE: the audit trail keeps who had access and until when.

CREATE TABLE pgqueue.api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- hex(sha256(token)); the lookup key of every authenticated request.
    token_hash   text NOT NULL CONSTRAINT api_tokens_hash_unique UNIQUE
                 CONSTRAINT api_tokens_hash_format CHECK (token_hash ~ '^[0-9a-f]{64}$'),
    -- The first characters of the token, so `pgqueue token list` can tell tokens apart.
    prefix       text NOT NULL,
    user_id      text NOT NULL CONSTRAINT api_tokens_user_valid CHECK (length(user_id) BETWEEN 1 AND 128),
    -- admin: everything; user: own tasks only; worker: claim and report (and read tasks).
    role         text NOT NULL CONSTRAINT api_tokens_role_valid CHECK (role IN ('admin', 'user', 'worker')),
    note         text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

COMMENT ON TABLE pgqueue.api_tokens IS
    'HTTP API bearer tokens, stored as SHA-256; made by `pgqueue token create`.';
