-- The remote-worker protocol (HTTP claim / heartbeat / complete / fail / release). Most
-- statements are shared with local workers (task_claim.sql, task_finish.sql,
-- task_maintain.sql); these are the few only the HTTP side needs.

-- name: worker_touch
-- A remote worker busy with tasks does not claim; its task heartbeats keep its row alive.
UPDATE pgqueue.workers SET heartbeat_at = now() WHERE id = %(id)s;
