-- aidb extension script, part 30: the pipeline functions users call.

CREATE FUNCTION aidb.chunk_text_config(
    desired_length integer,
    max_length integer DEFAULT NULL,
    overlap_length integer DEFAULT 0,
    strategy text DEFAULT 'chars'
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
              'desired_length', desired_length, 'max_length', max_length,
              'overlap_length', overlap_length, 'strategy', strategy)) $$;
COMMENT ON FUNCTION aidb.chunk_text_config(integer, integer, integer, text) IS
    'Options of step ChunkText: chunk size, hard maximum, overlap, in ''chars'' or ''words''.';

CREATE FUNCTION aidb.knowledge_base_config(
    model text,
    data_format text DEFAULT 'Text',
    distance_operator text DEFAULT 'L2',
    vector_index jsonb DEFAULT NULL
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
              'model', model, 'data_format', data_format,
              'distance_operator', distance_operator, 'vector_index', vector_index)) $$;
COMMENT ON FUNCTION aidb.knowledge_base_config(text, text, text, jsonb) IS
    'Options of step KnowledgeBase: model, data format (Text), distance operator '
    '(L2, Cosine, InnerProduct), vector index (e.g. {"type": "hnsw"}).';

CREATE FUNCTION aidb.create_pipeline(
    name text,
    source text,
    source_key_column text DEFAULT NULL,
    source_data_column text DEFAULT NULL,
    destination text DEFAULT NULL,
    step_1 text DEFAULT NULL,
    step_1_options jsonb DEFAULT NULL,
    step_2 text DEFAULT NULL,
    step_2_options jsonb DEFAULT NULL,
    step_3 text DEFAULT NULL,
    step_3_options jsonb DEFAULT NULL,
    step_4 text DEFAULT NULL,
    step_4_options jsonb DEFAULT NULL,
    step_5 text DEFAULT NULL,
    step_5_options jsonb DEFAULT NULL,
    step_6 text DEFAULT NULL,
    step_6_options jsonb DEFAULT NULL,
    step_7 text DEFAULT NULL,
    step_7_options jsonb DEFAULT NULL,
    step_8 text DEFAULT NULL,
    step_8_options jsonb DEFAULT NULL,
    step_9 text DEFAULT NULL,
    step_9_options jsonb DEFAULT NULL,
    step_10 text DEFAULT NULL,
    step_10_options jsonb DEFAULT NULL,
    auto_processing text DEFAULT 'Disabled',
    batch_size integer DEFAULT 100,
    background_sync_interval interval DEFAULT '30 seconds',
    owner_role text DEFAULT CURRENT_USER,
    source_filter text DEFAULT NULL
) RETURNS void
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].create_pipeline(args)
$$;
COMMENT ON FUNCTION aidb.create_pipeline IS
    'Creates a pipeline that keeps a destination table of chunks and embeddings in step '
    'with a table or view.';

CREATE FUNCTION aidb.update_pipeline(
    name text,
    auto_processing text DEFAULT NULL,
    batch_size integer DEFAULT NULL,
    background_sync_interval interval DEFAULT NULL
) RETURNS void
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].update_pipeline(name, auto_processing, batch_size, background_sync_interval)
$$;
COMMENT ON FUNCTION aidb.update_pipeline(text, text, integer, interval) IS
    'Changes how a pipeline runs (mode, batch size, sync interval); NULL keeps a setting.';

CREATE FUNCTION aidb.delete_pipeline(name text, drop_destination boolean DEFAULT false)
    RETURNS void
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].delete_pipeline(name, drop_destination)
$$;
COMMENT ON FUNCTION aidb.delete_pipeline(text, boolean) IS
    'Deletes a pipeline: its triggers, backlog and state; the destination table stays '
    'unless drop_destination => true.';

CREATE FUNCTION aidb.run_pipeline(name text) RETURNS void
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].run_pipeline(name)
$$;
COMMENT ON FUNCTION aidb.run_pipeline(text) IS
    'Processes all pending work of a pipeline now, whatever its mode, in this transaction.';

CREATE FUNCTION aidb.reconcile_pipeline(name text) RETURNS bigint
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].reconcile_pipeline(name)
$$;
COMMENT ON FUNCTION aidb.reconcile_pipeline(text) IS
    'Finds keys whose destination is out of step with the source (e.g. after writes with '
    'triggers disabled), enqueues them, and returns how many it found.';

-- Called by a Live pipeline's capture function, as the pipeline owner, with
-- the changed keys. PL/Python takes no polymorphic arguments, so the keys
-- cross as text, under settings that make the text exact (every float digit)
-- and are read back in the key's type by the engine in this same session.
CREATE FUNCTION aidb._process_live(pipeline_id integer, keys anyarray) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    SET extra_float_digits = 3
    AS $$
BEGIN
    PERFORM aidb._process_live_keys(pipeline_id, keys::text[]);
END
$$;

CREATE FUNCTION aidb._process_live_keys(pipeline_id integer, keys text[]) RETURNS void
    LANGUAGE plpython3u
    SET search_path = pg_catalog, pg_temp
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].process_live(pipeline_id, keys)
$$;

CREATE FUNCTION aidb._run_batch(pipeline_id integer) RETURNS integer
    LANGUAGE plpython3u
    SET search_path = pg_catalog, pg_temp
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].run_batch_for_worker(pipeline_id)
$$;
COMMENT ON FUNCTION aidb._run_batch(integer) IS
    'One step of a background worker''s pipelined batches (start one, write the oldest): '
    'returns keys written (1 if it only started one), 0 when idle, -1 if the pipeline is failing.';

CREATE FUNCTION aidb.retry_pipeline_errors(name text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p aidb.pipeline_registry;
    requeued bigint;
BEGIN
    p := aidb._pipeline_for_change(name);
    DELETE FROM aidb.pipeline_error_log e WHERE e.pipeline_id = p.id AND e.source_key IS NULL;
    EXECUTE format('INSERT INTO aidb.%I (key) SELECT e.source_key::%s FROM aidb.pipeline_error_log e '
                   'WHERE e.pipeline_id = $1 AND e.source_key IS NOT NULL',
                   '_backlog_' || p.id, (aidb._pipeline_key(p)).key_type)
        USING p.id;
    GET DIAGNOSTICS requeued = ROW_COUNT;
    RETURN requeued;
END
$$;
COMMENT ON FUNCTION aidb.retry_pipeline_errors(text) IS
    'Unblocks a pipeline and queues every key that failed again; returns how many.';

CREATE FUNCTION aidb.clear_pipeline_errors(name text) RETURNS bigint
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p aidb.pipeline_registry;
    cleared bigint;
BEGIN
    p := aidb._pipeline_for_change(name);
    DELETE FROM aidb.pipeline_error_log e WHERE e.pipeline_id = p.id;
    GET DIAGNOSTICS cleared = ROW_COUNT;
    RETURN cleared;
END
$$;
COMMENT ON FUNCTION aidb.clear_pipeline_errors(text) IS
    'Forgets the recorded errors of a pipeline; returns how many.';

CREATE FUNCTION aidb._pipeline_for_change(pipeline_name text) RETURNS aidb.pipeline_registry
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    p aidb.pipeline_registry;
BEGIN
    PERFORM aidb._require_aidb_user('manage pipelines');
    IF pipeline_name IS NULL THEN
        RAISE EXCEPTION 'the pipeline name must not be NULL'
            USING ERRCODE = 'null_value_not_allowed',
                  HINT = 'Pass the name of a pipeline (SELECT name FROM aidb.pipelines).';
    END IF;
    SELECT * INTO p FROM aidb.pipeline_registry r WHERE r.name = pipeline_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pipeline "%" does not exist', pipeline_name
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM aidb.pipelines.';
    END IF;
    IF NOT pg_has_role(p.owner_role, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for pipeline "%"', pipeline_name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('It belongs to role %s.', p.owner_role);
    END IF;
    RETURN p;
END
$$;

-- Checks a source_filter, as the caller, without running it: it must be one
-- boolean expression over the source's rows. It is planned twice through a
-- cursor, which is opened and never fetched (so nothing runs) and which
-- refuses a string that holds more than one statement, such as an injection
-- attempt "true); DROP TABLE t; SELECT (true". The bare form gives natural
-- syntax errors and refuses parentheses that close early; the parenthesised
-- form is the one the engine runs, and refuses trailing clauses (ORDER BY).
CREATE FUNCTION aidb._check_source_filter(source regclass, source_filter text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp    -- the path the filter runs under
    AS $$
DECLARE
    probe refcursor;
BEGIN
    OPEN probe FOR EXECUTE format('SELECT FROM %s WHERE %s', source, source_filter);
    CLOSE probe;
    OPEN probe FOR EXECUTE format(E'SELECT FROM %s WHERE (%s\n) LIMIT 0', source, source_filter);
    CLOSE probe;
EXCEPTION WHEN invalid_cursor_definition THEN
    RAISE EXCEPTION 'it holds more than one SQL statement'
        USING ERRCODE = 'invalid_parameter_value';
END
$$;
