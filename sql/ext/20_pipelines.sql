-- aidb extension script, part 20: pipelines — their registry, their errors,
-- and the SQL functions that create, change, run and delete them.
--
-- Each pipeline owns, besides its destination table, two internal tables in
-- schema aidb, named by the pipeline's id so that any name fits:
--   aidb._backlog_<id>  keys waiting to be processed (no unique key: the
--                       change-capture triggers only ever append)
--   aidb._state_<id>    per key, a hash of the content the destination holds
--                       (lets view sources and reconcile_pipeline find drift,
--                       and lets a batch skip keys whose content is unchanged)
-- and, for table sources, one capture trigger function aidb._capture_<id>().

CREATE TABLE aidb.pipeline_registry (
    id                       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                     text NOT NULL UNIQUE,
    source                   regclass,             -- a table or view, or
    source_volume            text,                 -- a volume (aidb.volumes)
    source_kind              text NOT NULL CHECK (source_kind IN ('table', 'view', 'volume')),
    source_key_column        text,                 -- NULL for volumes: the key is the object key
    source_data_column       text,
    source_filter            text,
    destination              regclass NOT NULL,
    steps                    jsonb NOT NULL,
    auto_processing          text NOT NULL DEFAULT 'Disabled'
                             CHECK (auto_processing IN ('Live', 'Background', 'Disabled')),
    batch_size               integer NOT NULL DEFAULT 100 CHECK (batch_size BETWEEN 1 AND 10000),
    background_sync_interval interval NOT NULL DEFAULT '30 seconds'
                             CHECK (background_sync_interval BETWEEN '1 second' AND '2 days'),
    owner_role               regrole NOT NULL DEFAULT pg_catalog.quote_ident(current_user)::regrole,
    created_at               timestamptz NOT NULL DEFAULT now(),
    CHECK (CASE source_kind WHEN 'volume' THEN source IS NULL AND source_volume IS NOT NULL
                            ELSE source IS NOT NULL AND source_volume IS NULL
                                 AND source_key_column IS NOT NULL
                                 AND source_data_column IS NOT NULL END)
);
COMMENT ON TABLE aidb.pipeline_registry IS
    'Pipelines. Use aidb.create_pipeline() and friends; read aidb.pipelines / aidb.pipem.';

-- Per pipeline: what happened when it last ran (one row, upserted by the engine).
CREATE TABLE aidb.pipeline_run_stats (
    pipeline_id     integer PRIMARY KEY REFERENCES aidb.pipeline_registry (id) ON DELETE CASCADE,
    last_run        timestamptz,
    keys_processed  bigint NOT NULL DEFAULT 0,
    last_rate       double precision,     -- keys per second of the last run
    last_error      text,
    scans_completed bigint NOT NULL DEFAULT 0,  -- volumes: complete listings so far
    objects_seen    bigint                      -- volumes: objects in the last listing
);

-- Errors: one row per failing key (source_key set), or per pipeline-wide
-- problem (source_key NULL), with how often it happened.
CREATE TABLE aidb.pipeline_error_log (
    pipeline_id     integer NOT NULL REFERENCES aidb.pipeline_registry (id) ON DELETE CASCADE,
    source_key      text,
    step            text NOT NULL,
    category        text NOT NULL CHECK (category IN ('RecordTemporary', 'RecordPermanent',
                                                      'PipelineTemporary', 'PipelinePermanent')),
    message         text NOT NULL,
    attempts        integer NOT NULL DEFAULT 1,
    first_attempt   timestamptz NOT NULL DEFAULT now(),
    last_attempt    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX pipeline_error_log_record ON aidb.pipeline_error_log (pipeline_id, source_key)
    WHERE source_key IS NOT NULL;
CREATE UNIQUE INDEX pipeline_error_log_pipeline ON aidb.pipeline_error_log (pipeline_id, category)
    WHERE source_key IS NULL;

-- Row-level security: everyone sees that pipelines exist; only members of a
-- pipeline's owner role (and superusers) change it or its bookkeeping.
ALTER TABLE aidb.pipeline_registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY anyone_reads ON aidb.pipeline_registry FOR SELECT USING (true);
CREATE POLICY owner_writes ON aidb.pipeline_registry FOR ALL
    USING (pg_catalog.pg_has_role(owner_role, 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role(owner_role, 'MEMBER'));

CREATE FUNCTION aidb._owns_pipeline(pipeline_id integer) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT FROM aidb.pipeline_registry p
                         WHERE p.id = pipeline_id AND pg_has_role(p.owner_role, 'MEMBER')) $$;

-- Run statistics hold the last error's message, so they are the owner's
-- too; aidb.pipem shows everyone the rest.
ALTER TABLE aidb.pipeline_run_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON aidb.pipeline_run_stats FOR ALL
    USING (aidb._owns_pipeline(pipeline_id)) WITH CHECK (aidb._owns_pipeline(pipeline_id));
ALTER TABLE aidb.pipeline_error_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON aidb.pipeline_error_log FOR ALL
    USING (aidb._owns_pipeline(pipeline_id)) WITH CHECK (aidb._owns_pipeline(pipeline_id));

-- Only aidb users create, change and delete pipelines. The bookkeeping is
-- written by runs, as the pipeline's owner (Live triggers fire for whoever
-- writes the source); row-level security limits it to the owner's pipelines.
GRANT SELECT ON aidb.pipeline_registry, aidb.pipeline_run_stats, aidb.pipeline_error_log TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON aidb.pipeline_registry TO aidb_users;
GRANT INSERT, UPDATE, DELETE ON aidb.pipeline_run_stats, aidb.pipeline_error_log TO PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('aidb.pipeline_registry', '');

-- Batches hand vectors to the destination as little-endian float4 bytes
-- (src/vectors.c): formatting and parsing them as text cost a third of a batch.
CREATE FUNCTION aidb._float4_vector(bytes bytea) RETURNS vector
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'aidb_float4_vector';
COMMENT ON FUNCTION aidb._float4_vector(bytea) IS
    'aidb internal: a vector from little-endian float4 bytes';

-- The fast path of table capture (src/capture.c): a statement-level AFTER
-- INSERT / UPDATE trigger that appends keys straight to the pipeline's
-- backlog, and hands key changes to aidb._capture_<id>(). Its arguments are
-- the pipeline id and columns, so only aidb._install_pipeline_objects may
-- attach it to a table.
CREATE FUNCTION aidb._capture_keys() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'aidb_capture_keys';
COMMENT ON FUNCTION aidb._capture_keys() IS
    'aidb internal: the capture trigger of non-Live table pipelines (INSERT, UPDATE)';
REVOKE ALL ON FUNCTION aidb._capture_keys() FROM PUBLIC;

-- Internal objects are created in schema aidb, where ordinary roles cannot
-- create anything. This SECURITY DEFINER function does that one narrow thing
-- for a pipeline the calling login role may act as: it names the objects from
-- the pipeline id, types them from the catalogs, and hands them to the
-- pipeline's owner. The capture function's body is the engine's, and since it
-- belongs to the owner it can never do more than the owner could. For table
-- sources it then (re)creates the four capture triggers, as the owner could:
-- the owner needs TRIGGER on the source. Creating them before the existing
-- rows are enqueued, in the same transaction, is what makes capture complete
-- (CREATE TRIGGER's lock keeps writers out until commit).
CREATE FUNCTION aidb._install_pipeline_objects(pipeline_id integer, capture_body text)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET client_min_messages = warning      -- no "already exists, skipping" on updates
    AS $$
DECLARE
    p        aidb.pipeline_registry;
    key_type text;
    backlog  text := format('aidb.%I', '_backlog_' || pipeline_id);
    state    text := format('aidb.%I', '_state_' || pipeline_id);
    capture  text := format('aidb.%I', '_capture_' || pipeline_id);
BEGIN
    SELECT * INTO STRICT p FROM aidb.pipeline_registry r WHERE r.id = pipeline_id;
    -- Inside SECURITY DEFINER current_user is the extension owner; the login
    -- role is the one whose rights count (it could SET ROLE to the owner).
    IF NOT pg_has_role(session_user, p.owner_role, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied for pipeline "%"', p.name
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p.source_kind = 'volume' THEN
        key_type := 'text';      -- object keys
    ELSE
        SELECT format_type(a.atttypid, a.atttypmod) INTO STRICT key_type
        FROM pg_attribute a WHERE a.attrelid = p.source AND a.attname = p.source_key_column;
    END IF;

    EXECUTE format('CREATE TABLE IF NOT EXISTS %s (key %s NOT NULL, queued_at timestamptz NOT NULL DEFAULT now())',
                   backlog, key_type);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s (key)', '_backlog_' || pipeline_id || '_key', backlog);
    EXECUTE format('CREATE TABLE IF NOT EXISTS %s (key %s PRIMARY KEY, hash uuid NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())',
                   state, key_type);
    EXECUTE format('ALTER TABLE %s OWNER TO %I', backlog, pg_get_userbyid(p.owner_role));
    EXECUTE format('ALTER TABLE %s OWNER TO %I', state, pg_get_userbyid(p.owner_role));

    IF p.source_kind = 'table' THEN
        -- The capture function's body is built by the engine from the same
        -- catalog-derived, quoted identifiers; it runs as the pipeline owner.
        EXECUTE format('CREATE OR REPLACE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql '
                       'SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS %L',
                       capture, capture_body);
        EXECUTE format('ALTER FUNCTION %s() OWNER TO %I', capture, pg_get_userbyid(p.owner_role));
        EXECUTE format('REVOKE ALL ON FUNCTION %s() FROM PUBLIC', capture);
        IF NOT has_table_privilege(p.owner_role, p.source, 'TRIGGER') THEN
            RAISE EXCEPTION 'permission denied: role % lacks TRIGGER on source %',
                pg_get_userbyid(p.owner_role), p.source
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        PERFORM aidb._create_capture_triggers(p, capture);
    END IF;
END
$$;

-- The capture triggers of table pipeline `p` (created or replaced): INSERT
-- and UPDATE through the C fast path, unless the pipeline is Live (then the
-- engine runs in the trigger, through the capture function); DELETE and
-- TRUNCATE through the capture function. A source_filter may read any
-- column, so the fast path then compares whole rows (data column '').
CREATE FUNCTION aidb._create_capture_triggers(p aidb.pipeline_registry, capture text)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    fast text := format('aidb._capture_keys(%L, %L, %L)', p.id, p.source_key_column,
                        CASE WHEN p.source_filter IS NULL THEN p.source_data_column ELSE '' END);
    event record;
BEGIN
    FOR event IN
        SELECT * FROM (VALUES
            ('insert',   'INSERT',   'REFERENCING NEW TABLE AS aidb_new',                    true),
            ('update',   'UPDATE',   'REFERENCING OLD TABLE AS aidb_old NEW TABLE AS aidb_new', true),
            ('delete',   'DELETE',   'REFERENCING OLD TABLE AS aidb_old',                    false),
            ('truncate', 'TRUNCATE', '',                                                     false)
        ) AS e(name, verb, referencing, fast_path)
    LOOP
        EXECUTE format('CREATE OR REPLACE TRIGGER %I AFTER %s ON %s %s FOR EACH STATEMENT EXECUTE FUNCTION %s',
                       'aidb_' || p.id || '_' || event.name, event.verb, p.source, event.referencing,
                       CASE WHEN event.fast_path AND p.auto_processing <> 'Live' THEN fast
                            ELSE capture || '()' END);
    END LOOP;
END
$$;
REVOKE ALL ON FUNCTION aidb._create_capture_triggers(aidb.pipeline_registry, text) FROM PUBLIC;

CREATE FUNCTION aidb._drop_pipeline_objects(pipeline_id integer) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    SET client_min_messages = warning      -- view pipelines have no capture function
    AS $$
DECLARE
    source regclass;
    event  text;
BEGIN
    IF EXISTS (SELECT FROM aidb.pipeline_registry r
               WHERE r.id = pipeline_id AND NOT pg_has_role(session_user, r.owner_role, 'MEMBER')) THEN
        RAISE EXCEPTION 'permission denied for pipeline %', pipeline_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    -- The capture triggers lock the source: source before backlog, the lock
    -- order of batches, or a batch running now deadlocks with us. Only the
    -- table's owner may DROP TRIGGER (the pipeline's owner may follow a table
    -- it does not own), hence here. A dropped source took them along.
    SELECT r.source INTO source FROM aidb.pipeline_registry r
    WHERE r.id = pipeline_id AND r.source_kind = 'table'
      AND EXISTS (SELECT FROM pg_class c WHERE c.oid = r.source);
    IF source IS NOT NULL THEN
        FOREACH event IN ARRAY ARRAY['insert', 'update', 'delete', 'truncate'] LOOP
            EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', 'aidb_' || pipeline_id || '_' || event, source);
        END LOOP;
    END IF;
    EXECUTE format('DROP FUNCTION IF EXISTS aidb.%I()', '_capture_' || pipeline_id);
    EXECUTE format('DROP TABLE IF EXISTS aidb.%I, aidb.%I',
                   '_backlog_' || pipeline_id, '_state_' || pipeline_id);
END
$$;

-- Only aidb users create and drop pipeline objects (SECURITY DEFINER).
REVOKE ALL ON FUNCTION aidb._install_pipeline_objects(integer, text),
    aidb._drop_pipeline_objects(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aidb._install_pipeline_objects(integer, text),
    aidb._drop_pipeline_objects(integer) TO aidb_users;

-- A pipeline's own objects (backlog, state, capture function, ...) depend
-- on the extension, so that DROP EXTENSION aidb refuses while they exist and
-- DROP EXTENSION aidb CASCADE removes them (src/dependency.c). Relations and
-- functions of schema aidb only; not for users: it changes what a DROP
-- EXTENSION removes.
CREATE FUNCTION aidb._depend_on_extension(classid regclass, objid oid) RETURNS void
    LANGUAGE c STRICT
    AS 'MODULE_PATHNAME', 'aidb_depend_on_extension';
COMMENT ON FUNCTION aidb._depend_on_extension(regclass, oid) IS
    'Records that an object of schema aidb depends on extension aidb (dropped with it on CASCADE).';
REVOKE EXECUTE ON FUNCTION aidb._depend_on_extension(regclass, oid) FROM PUBLIC;
