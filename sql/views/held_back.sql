-- pgqueue.held_back: how many due tasks each §12 rule holds back now, per queue and reason
-- (the codes of pgqueue.why()). A task held by two rules counts under both. Built from the
-- rule functions the claim applies (sql/functions/limits.sql); /metrics exports it as
-- pgqueue_tasks_held_back. Reads the due backlog once, like queue_stats reads the table.
CREATE OR REPLACE VIEW pgqueue.held_back AS
WITH due AS (
    SELECT t.queue, t.kind, t.user_id, count(*) AS n
      FROM pgqueue.tasks t
     WHERE t.status = 'pending' AND t.run_at <= now()
     GROUP BY t.queue, t.kind, t.user_id
), running AS (
    SELECT r.user_id, r.queue, count(*) AS in_queue,
           (sum(count(*)) OVER (PARTITION BY r.user_id))::bigint AS total
      FROM pgqueue.tasks r
     WHERE r.status = 'running' AND r.user_id IS NOT NULL
     GROUP BY r.user_id, r.queue
), limited AS (
    SELECT q.name, q.paused, q.per_user_concurrency, room.concurrency_free, room.rate_free
      FROM pgqueue.queues q CROSS JOIN LATERAL pgqueue.queue_room(q) room
     WHERE q.limited
), over AS (
    SELECT unnest(pgqueue.users_over_budget()) AS user_id
)
SELECT d.queue, r.reason, sum(d.n)::bigint AS tasks
  FROM due d
  LEFT JOIN limited q ON q.name = d.queue
  LEFT JOIN pgqueue.breakers b ON b.queue = d.queue AND b.kind = d.kind AND b.open_until IS NOT NULL
  LEFT JOIN pgqueue.user_limits l ON l.user_id = d.user_id
  LEFT JOIN running u ON u.user_id = d.user_id AND u.queue = d.queue
  LEFT JOIN (SELECT DISTINCT ON (user_id) user_id, total FROM running) ut ON ut.user_id = d.user_id
 CROSS JOIN LATERAL (VALUES
       ('queue_paused', coalesce(q.paused, false)),
       ('concurrency_limit', q.concurrency_free = 0),
       ('rate_limited', q.rate_free = 0),
       ('per_user_limit', d.user_id IS NOT NULL AND pgqueue.user_room(
            q.per_user_concurrency, u.in_queue, l.max_running, ut.total, false) = 0),
       ('budget_exhausted', d.user_id IN (SELECT o.user_id FROM over o)),
       ('circuit_open', b.queue IS NOT NULL AND pgqueue.breaker_state(b) IN ('open', 'probing'))
       ) AS r(reason, holds)
 WHERE r.holds
 GROUP BY d.queue, r.reason;

COMMENT ON VIEW pgqueue.held_back IS 'Due tasks held back now, per queue and §12 reason (codes of pgqueue.why).';
