-- aidb extension script, part 35: the bridge to the background workers (src/).
--
-- Everything is delivered at commit: a transaction that adds to a backlog
-- wakes that pipeline's worker; one that creates, changes or deletes a
-- pipeline publishes it to the launcher's shared table and wakes the
-- launcher. Without shared_preload_libraries they do nothing.

CREATE FUNCTION aidb._wake_pipeline(pipeline_id integer, urgent boolean DEFAULT false)
    RETURNS void
    LANGUAGE c STRICT
    AS 'MODULE_PATHNAME', 'aidb_wake_pipeline';
COMMENT ON FUNCTION aidb._wake_pipeline(integer, boolean) IS
    'Wakes the pipeline''s background worker when this transaction commits; urgent: even '
    'if it is backing off after errors.';

-- Takes the row's data as given, so only the registry's trigger may call it:
-- anyone else could have a worker started as any role.
CREATE FUNCTION aidb._publish_pipeline(pipeline_id integer, owner oid, can_login boolean,
                                       name text, background boolean) RETURNS void
    LANGUAGE c STRICT
    AS 'MODULE_PATHNAME', 'aidb_publish_pipeline';
COMMENT ON FUNCTION aidb._publish_pipeline(integer, oid, boolean, text, boolean) IS
    'At commit, tells the launcher whether the pipeline wants a background worker.';
REVOKE EXECUTE ON FUNCTION aidb._publish_pipeline(integer, oid, boolean, text, boolean) FROM PUBLIC;

-- The worker of a Background pipeline as the launcher's shared table knows
-- it. Its state is a code (src/aidb.h, AidbWorkerState): NULL (no worker),
-- 'waiting' (no free worker slot), 'starting', 'running', 'backoff' (the
-- last batch failed), 'cannot_login' (the owner role lacks LOGIN).
CREATE FUNCTION aidb._worker_entry(pipeline_id integer, OUT code text, OUT pid integer,
                                   OUT last_batch timestamptz, OUT keys_per_second double precision)
    LANGUAGE c STRICT
    AS 'MODULE_PATHNAME', 'aidb_worker_entry';
COMMENT ON FUNCTION aidb._worker_entry(integer) IS
    'State code, pid and last batch of a Background pipeline''s worker (NULLs when it has none).';

-- The one place where a state code becomes the words users read (the
-- "worker state" of aidb.pipem, the state of aidb.workers). SQL that decides
-- on a state compares the code.
CREATE FUNCTION aidb._worker_state(pipeline_id integer, OUT code text, OUT state text,
                                   OUT pid integer, OUT last_batch timestamptz,
                                   OUT keys_per_second double precision)
    LANGUAGE sql
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT w.code,
           CASE w.code
               WHEN 'waiting' THEN 'WaitingForWorker'
               WHEN 'starting' THEN 'starting'
               WHEN 'running' THEN 'running'
               WHEN 'backoff' THEN 'backing off after errors'
               WHEN 'cannot_login' THEN 'owner role cannot log in'
           END,
           w.pid, w.last_batch, w.keys_per_second
    FROM aidb._worker_entry(pipeline_id) w
$$;
COMMENT ON FUNCTION aidb._worker_state(integer) IS
    'State (code and display text), pid and last batch of a Background pipeline''s worker.';

-- An error that escaped the engine in a background worker (the worker calls
-- this in a fresh transaction after rolling the batch back). It first lets
-- go of the keys the worker's batches in flight hold leased (their claims
-- stay in the backlog): other workers need not wait for this one's backoff.
CREATE FUNCTION aidb._record_worker_error(pipeline_id integer, message text) RETURNS void
    LANGUAGE plpython3u
    SET search_path = pg_catalog, pg_temp
    AS $$
if "aidb" in GD:
    GD["aidb"].abandon_worker_batches(pipeline_id)
plpy.execute(plpy.prepare("""
    INSERT INTO aidb.pipeline_error_log (pipeline_id, source_key, step, category, message)
    VALUES ($1, NULL, 'worker', 'PipelineTemporary', $2)
    ON CONFLICT (pipeline_id, category) WHERE source_key IS NULL DO UPDATE
    SET step = EXCLUDED.step, message = EXCLUDED.message,
        attempts = pipeline_error_log.attempts + 1, last_attempt = pg_catalog.now()""",
    ["pg_catalog.int4", "pg_catalog.text"]), [pipeline_id, message])
$$;

-- Row by row, so that the launcher learns about a pipeline from its commit
-- alone: it needs no free worker slot for a discovery worker, and a pipeline
-- beyond the free slots can say WaitingForWorker. SECURITY DEFINER to call
-- _publish_pipeline; the row it reports is the one the caller was allowed to
-- write.
CREATE FUNCTION aidb._registry_row_changed() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM aidb._publish_pipeline(OLD.id, OLD.owner_role::oid, false, left(OLD.name, 63), false);
    ELSE
        PERFORM aidb._publish_pipeline(NEW.id, NEW.owner_role::oid, coalesce(r.rolcanlogin, false),
                                       left(NEW.name, 63), NEW.auto_processing = 'Background')
        FROM (SELECT NEW.owner_role::oid AS oid) o LEFT JOIN pg_roles r ON r.oid = o.oid;
    END IF;
    RETURN NULL;
END $$;
REVOKE EXECUTE ON FUNCTION aidb._registry_row_changed() FROM PUBLIC;
CREATE TRIGGER publish_to_launcher AFTER INSERT OR UPDATE OR DELETE ON aidb.pipeline_registry
    FOR EACH ROW EXECUTE FUNCTION aidb._registry_row_changed();

-- Errors cleared (retry_pipeline_errors, clear_pipeline_errors): a worker
-- backing off may retry at once.
CREATE FUNCTION aidb._errors_cleared() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$ BEGIN
    PERFORM aidb._wake_pipeline(d.pipeline_id, urgent => true)
    FROM (SELECT DISTINCT pipeline_id FROM cleared) d;
    RETURN NULL;
END $$;
CREATE TRIGGER wake_pipeline AFTER DELETE ON aidb.pipeline_error_log
    REFERENCING OLD TABLE AS cleared
    FOR EACH STATEMENT EXECUTE FUNCTION aidb._errors_cleared();
