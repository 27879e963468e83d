-- 0008 — the trace a task belongs to (SPEC §15).
--
-- An enqueue made inside an OpenTelemetry trace stores the W3C `traceparent` of its
-- producer span here (or the one an HTTP producer sent in its `traceparent` header), so the
-- worker that runs the task, in any process and over HTTP too, continues that trace: its
-- consumer span is a child of the producer span. NULL when there is no trace.
-- Nullable without a default: adding it rewrites no row. The bound keeps a hostile value
-- small; the format is checked where it comes in (pgqueue.tasks.Traceparent).

ALTER TABLE pgqueue.tasks
    ADD COLUMN traceparent text CONSTRAINT tasks_traceparent_size CHECK (octet_length(traceparent) <= 128);
