-- Container health checks (`pgqueue health --worker`): is a worker alive on this host?

-- name: worker_count_alive_on_host
-- Workers of one host whose heartbeat is younger than the stall time: what "this worker
-- container is healthy" means, whatever the number of processes it runs (--processes).
SELECT count(*)
  FROM pgqueue.workers
 WHERE host = %(host)s
   AND heartbeat_at >= now() - make_interval(secs => %(stall_s)s::float8);
