-- API tokens (sql/migrations/0002_api_tokens.sql): made and revoked by `pgqueue token`,
-- looked up by the HTTP server on each request it has not cached.

-- name: api_token_insert
-- A new token; only its hash and a short prefix are stored.
INSERT INTO pgqueue.api_tokens (token_hash, prefix, user_id, role, note)
VALUES (%(token_hash)s, %(prefix)s, %(user_id)s, %(role)s, %(note)s)
RETURNING id, prefix, user_id, role, note, created_at, last_used_at, revoked_at;

-- name: api_token_authenticate
-- The principal of a live token. It stamps last_used_at only for a token that exists and
-- at most once a minute: an unknown or revoked token writes nothing (it was an UPDATE that
-- every bad token paid for), and the server caches both answers for a few seconds.
WITH live AS (
    SELECT id, user_id, role FROM pgqueue.api_tokens
     WHERE token_hash = %(token_hash)s AND revoked_at IS NULL
), touched AS (
    UPDATE pgqueue.api_tokens t SET last_used_at = now()
      FROM live
     WHERE t.id = live.id
       AND (t.last_used_at IS NULL OR t.last_used_at < now() - interval '1 minute')
)
SELECT user_id, role, id FROM live;

-- name: api_token_list
-- Every token, newest first (revoked ones too: who had access, and until when).
SELECT id, prefix, user_id, role, note, created_at, last_used_at, revoked_at
  FROM pgqueue.api_tokens ORDER BY id DESC;

-- name: api_token_revoke
-- Revoke by id or by prefix; returns the tokens revoked now.
UPDATE pgqueue.api_tokens
   SET revoked_at = now()
 WHERE revoked_at IS NULL
   AND (id::text = %(ref)s OR prefix = %(ref)s)
RETURNING id, prefix, user_id, role, note, created_at, last_used_at, revoked_at;

-- name: api_token_count_live
-- How many tokens can still authenticate: `pgqueue serve` refuses to start with none.
SELECT count(*) FROM pgqueue.api_tokens WHERE revoked_at IS NULL;
