-- aidb extension script, part 38: external workers (aidb worker / aidb.Worker)
-- report heartbeats here; aidb.workers shows them beside the background workers.

-- upgrade: skip begin
CREATE TABLE aidb.worker_heartbeats (
    worker_id       uuid PRIMARY KEY,
    role            regrole NOT NULL DEFAULT pg_catalog.quote_ident(current_user)::regrole,
    host            text,
    pid             integer,
    version         text,
    pipelines       text[] NOT NULL DEFAULT '{}',   -- served in its last pass
    poll_interval   interval,
    started_at      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat  timestamptz NOT NULL DEFAULT now(),
    keys_processed  bigint NOT NULL DEFAULT 0,
    errors          bigint NOT NULL DEFAULT 0,
    stopped_at      timestamptz
);
COMMENT ON TABLE aidb.worker_heartbeats IS 'Heartbeats of external workers; read aidb.workers.';
ALTER TABLE aidb.worker_heartbeats ENABLE ROW LEVEL SECURITY;
CREATE POLICY anyone_reads ON aidb.worker_heartbeats FOR SELECT USING (true);
CREATE POLICY own_rows ON aidb.worker_heartbeats FOR ALL
    USING (pg_catalog.pg_has_role(role, 'MEMBER')) WITH CHECK (pg_catalog.pg_has_role(role, 'MEMBER'));
GRANT SELECT ON aidb.worker_heartbeats TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON aidb.worker_heartbeats TO aidb_users;
-- upgrade: skip end

CREATE FUNCTION aidb._worker_heartbeat(worker_id uuid, host text, pid integer, version text,
    pipelines text[], keys_processed bigint, errors bigint, poll_seconds double precision,
    stopped boolean) RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    INSERT INTO aidb.worker_heartbeats AS h (worker_id, host, pid, version, pipelines,
                                             poll_interval, keys_processed, errors, stopped_at)
    VALUES (worker_id, host, pid, version, pipelines, make_interval(secs => poll_seconds),
            keys_processed, errors, CASE WHEN stopped THEN now() END)
    ON CONFLICT ON CONSTRAINT worker_heartbeats_pkey DO UPDATE
    SET pipelines = CASE WHEN stopped THEN h.pipelines ELSE EXCLUDED.pipelines END,
        last_heartbeat = now(), keys_processed = EXCLUDED.keys_processed,
        errors = EXCLUDED.errors, stopped_at = EXCLUDED.stopped_at;
    -- Forget workers that stopped or went silent a day ago.
    DELETE FROM aidb.worker_heartbeats
    WHERE last_heartbeat < now() - interval '1 day';
$$;

-- An external worker is alive while its heartbeats come at least every two
-- poll intervals (plus a minute for a long batch).
CREATE FUNCTION aidb._external_worker_alive(h aidb.worker_heartbeats) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT h.stopped_at IS NULL
                 AND h.last_heartbeat > now() - 2 * coalesce(h.poll_interval, '5 minutes')
                                              - interval '1 minute' $$;

CREATE VIEW aidb.workers AS
SELECT 'background' AS kind,
       p.name AS pipeline,
       w.pid,
       NULL::text AS host,
       w.state,
       w.last_batch AS last_activity,
       NULL::bigint AS keys_processed
FROM aidb.pipeline_registry p
CROSS JOIN LATERAL aidb._worker_state(p.id) w
WHERE w.state IS NOT NULL
UNION ALL
SELECT 'external',
       pipeline,
       h.pid,
       h.host,
       CASE WHEN h.stopped_at IS NOT NULL THEN 'stopped'
            WHEN aidb._external_worker_alive(h) THEN 'running'
            ELSE 'lost' END,
       h.last_heartbeat,
       h.keys_processed
FROM aidb.worker_heartbeats h
LEFT JOIN LATERAL unnest(CASE WHEN h.pipelines = '{}' THEN ARRAY[NULL::text] ELSE h.pipelines END) AS pipeline ON true;
COMMENT ON VIEW aidb.workers IS
    'Background workers (one per Background pipeline) and external workers (aidb worker), '
    'with the pipelines they serve.';
GRANT SELECT ON aidb.workers TO PUBLIC;
