-- 0015 — an enqueue with dependencies never waits for a lock (no deadlock with batch finishes).
--
-- 0013's insert trigger read the dependencies FOR SHARE and waited for any holder. A
-- producer locking its dependencies one row after another (a batch, or a task depending on
-- both a running task and a blocked one) and a batch finish ending several of them, then
-- updating their dependents, took the same rows in different orders: PostgreSQL aborted one
-- of them (deadlock_detected), and the aborted one was often the producer's enqueue.
-- Now the insert locks them FOR SHARE SKIP LOCKED (sql/functions/workflows.sql): a row held
-- by someone is read as last committed and, when unfinished, listed here; whoever next ends
-- a task, or the reaper, looks at it again once nobody holds it, and resolves the edges of a
-- dependency that ended meanwhile. Finishes still wait for producers (which wait for no one),
-- and lock the dependents they change in id order.
CREATE TABLE pgqueue.dependency_checks (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- no unique key: no waits
    depends_on uuid NOT NULL
);
CREATE INDEX dependency_checks_depends_on_idx ON pgqueue.dependency_checks (depends_on);
COMMENT ON TABLE pgqueue.dependency_checks IS
    'Dependencies an enqueue read while another transaction held them (migration 0015).';
