-- Enqueue: the producer side. The happy path is one INSERT; the idempotency rules of
-- SPEC §3 add a read only when a key is already taken. Keys are scoped by owner: every
-- statement below matches (coalesce(user_id, ''), idempotency_key), the key of
-- tasks_owner_idempotency_key_idx (migration 0006), so no answer involves another owner's task.

-- name: task_insert
-- Insert one task. With an idempotency key already taken by the same owner this returns no
-- row: the caller then reads the holder (task_get_by_idempotency_keys). ON CONFLICT waits for a concurrent
-- inserter of the same key to commit, so racing producers create exactly one task.
-- RETURNING only what the database decided (the caller knows the rest, see
-- pgqueue.tasks.created_task): decoding the whole row back cost a third of a bulk enqueue.
INSERT INTO pgqueue.tasks AS t (kind, payload, queue, priority, run_at, max_retries, timeout_s,
                                backoff_base_s, backoff_max_s, idempotency_key, user_id, tags,
                                parent_id, traceparent, depends_on, callback_url)
VALUES (%(kind)s, %(payload)s::jsonb, %(queue)s, %(priority)s,
        coalesce(%(run_at)s::timestamptz, now()) + make_interval(secs => %(delay_s)s::float8),
        %(max_retries)s, %(timeout_s)s::float8, %(backoff_base_s)s::float8,
        %(backoff_max_s)s::float8, %(idempotency_key)s::text, %(user_id)s::text,
        %(tags)s::text[], %(parent_id)s::uuid, %(traceparent)s::text,
        %(depends_on)s::uuid[], %(callback_url)s::text)
ON CONFLICT ((coalesce(user_id, '')), idempotency_key) WHERE idempotency_key IS NOT NULL
DO NOTHING
RETURNING t.id, t.seq, t.run_at, t.created_at, t.user_id, t.idempotency_key, t.status::text;

-- name: task_insert_many
-- Insert a batch in one statement from one JSON array (parsed in C by jsonb_to_recordset:
-- faster than binding 14 x N parameters, and unlike COPY it allows ON CONFLICT for keys).
-- Rows whose key is taken are skipped; the caller reads their holders afterwards.
-- RETURNING order is not guaranteed; callers sort by seq, which follows input order, and
-- match keyed rows by key. As above, only the columns the database decided come back
-- (RETURNING * cost a third of a bulk enqueue's rate).
-- Rows carry only the fields that differ from pgqueue.tasks.NewTask's defaults (fewer keys
-- to parse, a third of the server CPU), so every coalesce() below must
-- give NewTask's default. Python always sends a payload, so a NULL from jsonb_to_recordset
-- is a JSON null payload (as in task_insert), not a missing one.
INSERT INTO pgqueue.tasks AS t (kind, payload, queue, priority, run_at, max_retries, timeout_s,
                                backoff_base_s, backoff_max_s, idempotency_key, user_id, tags,
                                parent_id, traceparent, depends_on, callback_url, id)
SELECT r.kind, coalesce(r.payload, 'null'), coalesce(r.queue, 'default'), coalesce(r.priority, 0),
       coalesce(r.run_at, now()) + make_interval(secs => coalesce(r.delay_s, 0)),
       coalesce(r.max_retries, 3), r.timeout_s, r.backoff_base_s, r.backoff_max_s,
       r.idempotency_key, coalesce(r.user_id, %(user_id)s::text), coalesce(r.tags, '{}'),
       r.parent_id, r.traceparent, coalesce(r.depends_on, '{}'), r.callback_url,
       coalesce(r.id, gen_random_uuid())
  FROM ROWS FROM (jsonb_to_recordset(%(tasks)s::jsonb) AS (
           kind text, payload jsonb, queue text, priority integer, run_at timestamptz,
           delay_s float8, max_retries integer, timeout_s float8, backoff_base_s float8,
           backoff_max_s float8, idempotency_key text, user_id text, tags text[],
           parent_id uuid, traceparent text, depends_on uuid[], callback_url text, id uuid))
       WITH ORDINALITY AS r(kind, payload, queue, priority, run_at, delay_s, max_retries,
                            timeout_s, backoff_base_s, backoff_max_s, idempotency_key,
                            user_id, tags, parent_id, traceparent, depends_on, callback_url,
                            id, ord)
 ORDER BY r.ord
ON CONFLICT ((coalesce(user_id, '')), idempotency_key) WHERE idempotency_key IS NOT NULL
DO NOTHING
RETURNING t.id, t.seq, t.run_at, t.created_at, t.user_id, t.idempotency_key, t.status::text;

-- name: task_get_by_idempotency_keys
-- The tasks holding these (owner, key) pairs, to replay them or to find a conflict. Owners
-- come as coalesce(user_id, ''), matched pairwise with keys; each pair is one probe of
-- tasks_owner_idempotency_key_idx.
SELECT t.*
  FROM unnest(%(owners)s::text[], %(keys)s::text[]) AS k(owner, key)
  JOIN pgqueue.tasks t
    ON coalesce(t.user_id, '') = k.owner AND t.idempotency_key = k.key
 WHERE t.idempotency_key IS NOT NULL;

-- name: task_release_idempotency_key
-- Free an owner's key whose holder is older than the idempotency TTL, so it can be used
-- again. The task stays; only its claim on the key goes.
UPDATE pgqueue.tasks
   SET idempotency_key = NULL, updated_at = now()
 WHERE coalesce(user_id, '') = coalesce(%(user_id)s::text, '')
   AND idempotency_key = %(key)s::text
   AND created_at < now() - make_interval(secs => %(ttl_s)s::float8)
RETURNING id;

-- name: task_parent_owners
-- The owners of the named parent tasks (SPEC §1 parent_id: a task the caller may read; the
-- child gets its owner), and of dependencies (§10 depends_on: tasks the caller may read).
-- Asked only for enqueues that name a parent or a dependency.
SELECT id, user_id FROM pgqueue.tasks WHERE id = ANY(%(ids)s::uuid[]);
