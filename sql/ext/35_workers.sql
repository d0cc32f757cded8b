-- aidb extension script, part 35: the bridge to the background workers (src/).
--
-- Wake-ups are delivered at commit: a transaction that adds to a backlog
-- wakes that pipeline's worker; one that changes the pipeline registry wakes
-- the launcher. Without shared_preload_libraries they do nothing.

CREATE FUNCTION aidb._wake_pipeline(pipeline_id integer) RETURNS void
    LANGUAGE c STRICT
    AS 'MODULE_PATHNAME', 'aidb_wake_pipeline';
COMMENT ON FUNCTION aidb._wake_pipeline(integer) IS
    'Wakes the pipeline''s background worker when this transaction commits.';

CREATE FUNCTION aidb._wake_launcher() RETURNS void
    LANGUAGE c
    AS 'MODULE_PATHNAME', 'aidb_wake_launcher';
COMMENT ON FUNCTION aidb._wake_launcher() IS
    'Makes the launcher look at this database''s pipelines again when this transaction commits.';

CREATE FUNCTION aidb._worker_state(pipeline_id integer, OUT state text, OUT pid integer,
                                   OUT last_batch timestamptz, OUT rows_per_second double precision)
    LANGUAGE c STRICT
    AS 'MODULE_PATHNAME', 'aidb_worker_state';
COMMENT ON FUNCTION aidb._worker_state(integer) IS
    'State, pid and last batch of a Background pipeline''s worker (NULLs when it has none).';

-- An error that escaped the engine in a background worker (the worker calls
-- this in a fresh transaction after rolling the batch back).
CREATE FUNCTION aidb._record_worker_error(pipeline_id integer, message text) RETURNS void
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    INSERT INTO aidb.pipeline_error_log (pipeline_id, source_key, step, category, message)
    VALUES (pipeline_id, NULL, 'worker', 'PipelineTemporary', message)
    ON CONFLICT (pipeline_id, category) WHERE source_key IS NULL DO UPDATE
    SET step = EXCLUDED.step, message = EXCLUDED.message,
        attempts = pipeline_error_log.attempts + 1, last_attempt = now()
$$;

CREATE FUNCTION aidb._registry_changed() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$ BEGIN PERFORM aidb._wake_launcher(); RETURN NULL; END $$;
CREATE TRIGGER wake_launcher AFTER INSERT OR UPDATE OR DELETE ON aidb.pipeline_registry
    FOR EACH STATEMENT EXECUTE FUNCTION aidb._registry_changed();

-- Errors cleared (retry_pipeline_errors, clear_pipeline_errors): a worker
-- backing off may retry at once.
CREATE FUNCTION aidb._errors_cleared() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$ BEGIN
    PERFORM aidb._wake_pipeline(d.pipeline_id) FROM (SELECT DISTINCT pipeline_id FROM cleared) d;
    RETURN NULL;
END $$;
CREATE TRIGGER wake_pipeline AFTER DELETE ON aidb.pipeline_error_log
    REFERENCING OLD TABLE AS cleared
    FOR EACH STATEMENT EXECUTE FUNCTION aidb._errors_cleared();
