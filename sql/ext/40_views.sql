-- aidb extension script, part 40: what users read — pipelines, metrics, errors.

CREATE VIEW aidb.pipelines AS
SELECT p.name,
       coalesce(p.source::text, p.source_volume) AS source,
       p.source_type,
       p.source_key_column,
       p.source_data_column,
       p.source_filter,
       p.destination::text AS destination,
       p.steps,
       p.auto_processing,
       p.batch_size,
       p.background_sync_interval,
       p.owner_role,
       p.created_at
FROM aidb.pipeline_registry p;
COMMENT ON VIEW aidb.pipelines IS 'Every pipeline and its configuration (short name: aidb.pipes).';
CREATE VIEW aidb.pipes AS SELECT * FROM aidb.pipelines;
COMMENT ON VIEW aidb.pipes IS 'Short name of aidb.pipelines.';

-- Errors are visible to the pipeline's owner only (row-level security on the
-- log applies because the view runs with the caller's rights).
CREATE VIEW aidb.pipeline_errors WITH (security_invoker = true) AS
SELECT p.name AS pipeline,
       e.source_key,
       e.step,
       e.category,
       e.message,
       e.attempts,
       e.first_attempt,
       e.last_attempt
FROM aidb.pipeline_error_log e
JOIN aidb.pipeline_registry p ON p.id = e.pipeline_id;
COMMENT ON VIEW aidb.pipeline_errors IS
    'Failures per key (source_key set) or per pipeline (source_key NULL), with attempts.';

-- Counts that need dynamic SQL over each pipeline's own tables. A count the
-- caller may not read is NULL rather than an error. The source is counted by
-- the pipeline owner's own function (aidb._count_<id>, part 25), with the
-- owner's rights: a view's functions and a source_filter are the owner's
-- SQL and never run with the reader's rights, a superuser's included.
CREATE FUNCTION aidb._pipeline_counts(p aidb.pipeline_registry,
    OUT pending bigint, OUT source_records bigint, OUT destination_records bigint,
    OUT null_keys bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    -- Monitoring never queues behind a migration: a count whose table is
    -- locked (ALTER TABLE, TRUNCATE, ...) is NULL for now.
    SET lock_timeout = '50ms'
    AS $$
DECLARE
    backlog regclass := to_regclass(format('aidb.%I', '_backlog_' || p.id));
    counter regprocedure := to_regprocedure(format('aidb.%I()', '_count_' || p.id));
BEGIN
    IF backlog IS NOT NULL AND has_table_privilege(backlog, 'SELECT') THEN
        BEGIN
            -- Keys of rows of one key and of rows holding sets. A pipeline
            -- that ALTER EXTENSION UPDATE could not rebuild (its source gone)
            -- keeps a backlog of 0.1.0's shape, without sets.
            EXECUTE format(CASE WHEN EXISTS (SELECT FROM pg_attribute a
                                             WHERE a.attrelid = backlog AND a.attname = 'keys'
                                               AND NOT a.attisdropped)
                                THEN 'SELECT count(DISTINCT k) FROM (SELECT key FROM %1$s '
                                     'WHERE key IS NOT NULL UNION ALL SELECT unnest(keys) '
                                     'FROM %1$s WHERE keys IS NOT NULL) AS b(k)'
                                ELSE 'SELECT count(DISTINCT key) FROM %1$s' END,
                           backlog) INTO pending;
        EXCEPTION WHEN lock_not_available THEN
            pending := NULL;
        END;
    END IF;
    -- Only through a count function as aidb made it (70_event_triggers.sql):
    -- one its owner made SECURITY INVOKER would run the owner's SQL as the reader.
    IF counter IS NOT NULL AND EXISTS (SELECT FROM pg_class c WHERE c.oid = p.source)
       AND has_table_privilege(p.source, 'SELECT')
       AND aidb._owner_function_problem(p.id, p.owner_role) IS NULL THEN
        BEGIN
            EXECUTE format('SELECT records, null_keys FROM %s', counter)
                INTO source_records, null_keys;
        EXCEPTION WHEN OTHERS THEN
            source_records := NULL;     -- the owner lost a right, say: no count, no error
        END;
    END IF;
    -- Plain tables only: on PostgreSQL 15 an empty table can become a view
    -- (CREATE RULE "_RETURN"), whose functions would run as the reader; and
    -- with row security only for readers who bypass it (policies are the
    -- owner's SQL too).
    IF EXISTS (SELECT FROM pg_class c WHERE c.oid = p.destination AND c.relkind IN ('r', 'p')
               AND (NOT c.relrowsecurity
                    OR (SELECT r.rolsuper OR r.rolbypassrls FROM pg_roles r
                        WHERE r.rolname = current_user)))
       AND has_table_privilege(p.destination, 'SELECT') THEN
        BEGIN
            -- A shared destination: the pipeline's own rows (part 26).
            EXECUTE format('SELECT count(*) FROM %s AS d WHERE true%s', p.destination,
                           aidb._destination_scope(p)) INTO destination_records;
        EXCEPTION WHEN lock_not_available THEN
            destination_records := NULL;
        END;
    END IF;
END
$$;

CREATE FUNCTION aidb._pipeline_status(p aidb.pipeline_registry, pending bigint,
    source_records bigint, destination_records bigint, record_errors bigint,
    blocking_errors bigint, temporary_errors bigint, worker_state text)
    RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
SELECT CASE
    WHEN blocking_errors > 0 THEN 'BlockingErrors'
    WHEN temporary_errors > 0 AND pending > 0 THEN 'Failed'
    WHEN worker_state = 'waiting' THEN 'WaitingForWorker'   -- codes: 35_workers.sql
    WHEN pending > 0 AND p.auto_processing = 'Disabled' THEN 'Disabled'
    WHEN pending > 0 AND p.auto_processing = 'Background' AND worker_state IS NULL THEN 'Stale'
    WHEN pending > 0 THEN 'Processing'
    WHEN record_errors > 0 THEN 'PartialErrors'
    WHEN source_records > 0 AND destination_records = 0 THEN 'NoResults'
    ELSE 'UpToDate'
END
$$;

CREATE VIEW aidb.pipeline_metrics AS
SELECT p.name AS "pipeline",
       p.auto_processing AS "auto processing",
       c.pending AS "table: unprocessed rows",
       s.scans_completed AS "volume: scans completed",
       CASE WHEN p.source_type = 'volume' THEN s.objects_seen ELSE c.source_records END
           AS "count(source records)",
       c.destination_records AS "count(destination records)",
       aidb._pipeline_status(p, c.pending, c.source_records, c.destination_records,
                             e.record_errors, e.blocking_errors, e.temporary_errors, w.code) AS "Status",
       e.record_errors AS "count(record errors)",
       e.blocking_errors AS "count(blocking errors)",
       w.state AS "worker state",
       w.pid AS "worker pid",
       greatest(s.last_run, w.last_batch) AS "last run",
       round(coalesce(w.keys_per_second, s.last_rate)::numeric, 1) AS "rows/s",
       -- Like aidb.pipeline_errors, for the pipeline's owner only.
       CASE WHEN aidb._owns_pipeline(p.id) THEN s.last_error END AS "last error",
       (SELECT string_agg(ic.relname, ', ' ORDER BY ic.relname)
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_catalog.pg_am am ON am.oid = ic.relam
        WHERE i.indrelid = p.destination AND am.amname IN ('hnsw', 'ivfflat')) AS "vector index",
       (SELECT count(*) FROM aidb.worker_heartbeats h
        WHERE p.name = ANY (h.pipelines) AND aidb._external_worker_alive(h)) AS "external workers",
       -- Rows whose key is NULL (a UNIQUE column allows them): never embedded.
       c.null_keys AS "null keys"
FROM aidb.pipeline_registry p
CROSS JOIN LATERAL aidb._pipeline_counts(p) c
CROSS JOIN LATERAL aidb._worker_state(p.id) w
LEFT JOIN aidb.pipeline_run_stats s ON s.pipeline_id = p.id
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE l.source_key IS NOT NULL) AS record_errors,
           count(*) FILTER (WHERE l.source_key IS NULL AND l.category = 'PipelinePermanent') AS blocking_errors,
           count(*) FILTER (WHERE l.source_key IS NULL AND l.category = 'PipelineTemporary') AS temporary_errors
    FROM aidb.pipeline_error_log l WHERE l.pipeline_id = p.id) e;
COMMENT ON VIEW aidb.pipeline_metrics IS
    'Per pipeline: mode, pending keys, source and destination counts, status, errors, '
    'worker, last run (short name: aidb.pipem).';
CREATE VIEW aidb.pipem AS SELECT * FROM aidb.pipeline_metrics;
COMMENT ON VIEW aidb.pipem IS 'Short name of aidb.pipeline_metrics.';

GRANT SELECT ON aidb.pipelines, aidb.pipes, aidb.pipeline_errors, aidb.pipeline_metrics,
    aidb.pipem TO PUBLIC;
