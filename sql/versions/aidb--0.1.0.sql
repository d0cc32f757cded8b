-- aidb extension script, part 00: the bridge to the Python engine.
--
-- Every PL/Python entry point starts with the same line,
--     if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
-- and then calls one function of GD["aidb"] (the module aidb.sql_api). The
-- engine and its pinned dependencies live in a private directory, put at the
-- FRONT of sys.path so they win over Debian's older dist-packages.

\echo Use "CREATE EXTENSION aidb" to load this file. \quit

CREATE FUNCTION aidb._engine_dir() RETURNS text
    LANGUAGE c IMMUTABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'aidb_engine_dir';
COMMENT ON FUNCTION aidb._engine_dir() IS
    'Directory of the installed Python engine (engine/) and its dependencies (deps/).';

CREATE FUNCTION aidb._preloaded() RETURNS boolean
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'aidb_preloaded';
COMMENT ON FUNCTION aidb._preloaded() IS
    'Whether aidb is in shared_preload_libraries (needed for background workers).';

CREATE FUNCTION aidb._engine_init() RETURNS void
    LANGUAGE plpython3u
    AS $$
import sys
engine_dir = plpy.execute("SELECT aidb._engine_dir() AS d")[0]["d"]
for path in (engine_dir + "/deps", engine_dir + "/engine"):
    if path in sys.path:
        sys.path.remove(path)
    sys.path.insert(0, path)
import aidb.sql_api
GD["aidb"] = aidb.sql_api
$$;
COMMENT ON FUNCTION aidb._engine_init() IS
    'Loads the Python engine into this session (once; later calls are cheap).';
-- aidb extension script, part 10: who may use aidb, and the model registry.
--
-- Members of the role aidb_users (and superusers) create and manage models
-- and pipelines; each manages only its own. Everyone may read the views and
-- retrieve from destinations they can read.
--
-- Definitions are public (aidb.models); credentials sit in their own table
-- that row-level security limits to the model's owner (and superusers). The
-- aidb.models view only says whether credentials exist, never what they are.

-- Roles belong to the cluster, not to a database: the extension in a second
-- database (or again after DROP EXTENSION) finds the role already there.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'aidb_users') THEN
        CREATE ROLE aidb_users NOLOGIN;
        COMMENT ON ROLE aidb_users IS
            'Members may create aidb models and pipelines (GRANT aidb_users TO some_role).';
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;   -- created meanwhile by CREATE EXTENSION in another database
END
$$;

-- The check behind every function that changes aidb objects, for a clear
-- error; the table privileges granted below enforce the same rule.
CREATE FUNCTION aidb._require_aidb_user(action text) RETURNS void
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT pg_has_role(current_user, 'aidb_users', 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to %: role % is not a member of aidb_users',
            action, quote_ident(current_user)
            USING ERRCODE = 'insufficient_privilege',
                  HINT = format('Ask an administrator for membership: GRANT aidb_users TO %I;',
                                current_user);
    END IF;
END
$$;

CREATE TABLE aidb.model_registry (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    provider    text NOT NULL,
    config      jsonb NOT NULL DEFAULT '{}',
    owner       regrole NOT NULL DEFAULT pg_catalog.quote_ident(current_user)::regrole,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE aidb.model_registry IS
    'Models known to aidb. Use aidb.create_model() / aidb.delete_model(); read aidb.models.';

CREATE TABLE aidb.model_credentials (
    model       text PRIMARY KEY REFERENCES aidb.model_registry (name) ON DELETE CASCADE,
    credentials jsonb NOT NULL
);
COMMENT ON TABLE aidb.model_credentials IS
    'API keys of models; each row is visible only to the model''s owner.';

ALTER TABLE aidb.model_registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY anyone_reads ON aidb.model_registry FOR SELECT USING (true);
CREATE POLICY owner_writes ON aidb.model_registry FOR ALL
    USING (pg_catalog.pg_has_role(owner, 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role(owner, 'MEMBER'));

ALTER TABLE aidb.model_credentials ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON aidb.model_credentials FOR ALL
    USING (EXISTS (SELECT FROM aidb.model_registry m
                   WHERE m.name = model AND pg_catalog.pg_has_role(m.owner, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT FROM aidb.model_registry m
                        WHERE m.name = model AND pg_catalog.pg_has_role(m.owner, 'MEMBER')));

-- CREATE EXTENSION made the schema, owned by a superuser: without USAGE no
-- other role could reach any aidb object (CREATE stays with the owner).
GRANT USAGE ON SCHEMA aidb TO PUBLIC;
GRANT SELECT ON aidb.model_registry, aidb.model_credentials TO PUBLIC;
GRANT INSERT, DELETE ON aidb.model_registry, aidb.model_credentials TO aidb_users;

-- User-created models are part of a dump; the pre-registered ones come back
-- with CREATE EXTENSION.
SELECT pg_catalog.pg_extension_config_dump('aidb.model_registry', 'WHERE name <> ''minilm''');
SELECT pg_catalog.pg_extension_config_dump('aidb.model_credentials', '');

-- The embedded default: all-MiniLM-L6-v2, in-process, offline, no key.
INSERT INTO aidb.model_registry (name, provider, config)
VALUES ('minilm', 'local_embeddings', '{"model": "all-MiniLM-L6-v2", "max_batch_size": 64}');

CREATE VIEW aidb.models AS
SELECT m.name,
       m.provider,
       m.config,
       m.owner,
       EXISTS (SELECT FROM aidb.model_credentials c WHERE c.model = m.name) AS has_credentials,
       m.created_at
FROM aidb.model_registry m;
COMMENT ON VIEW aidb.models IS
    'Registered models: name, provider, config, owner, whether credentials are set.';
GRANT SELECT ON aidb.models TO PUBLIC;

CREATE FUNCTION aidb.create_model(
    name text,
    provider text,
    config jsonb DEFAULT '{}',
    credentials jsonb DEFAULT '{}',
    replace_credentials boolean DEFAULT false
) RETURNS void
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].create_model(name, provider, config, credentials, replace_credentials)
$$;
COMMENT ON FUNCTION aidb.create_model(text, text, jsonb, jsonb, boolean) IS
    'Registers a model (providers: openai_embeddings, ollama_embeddings, local_embeddings); '
    'with replace_credentials => true, replaces the credentials of an existing one.';

CREATE FUNCTION aidb.delete_model(name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    model_owner regrole;
BEGIN
    PERFORM aidb._require_aidb_user('delete models');
    SELECT m.owner INTO model_owner FROM aidb.model_registry m WHERE m.name = delete_model.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'model "%" does not exist', delete_model.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM aidb.models.';
    END IF;
    IF NOT pg_has_role(model_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to delete model "%"', delete_model.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('The model belongs to role %s.', model_owner);
    END IF;
    -- A pipeline's KnowledgeBase step names its model: deleting it would
    -- break the pipeline at its next batch.
    IF EXISTS (SELECT FROM aidb.pipeline_registry p, jsonb_array_elements(p.steps) s
               WHERE s->'options'->>'model' = delete_model.name) THEN
        RAISE EXCEPTION 'model "%" is used by pipeline "%"', delete_model.name,
            (SELECT p.name FROM aidb.pipeline_registry p, jsonb_array_elements(p.steps) s
             WHERE s->'options'->>'model' = delete_model.name ORDER BY p.name LIMIT 1)
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete the pipelines that use it first (SELECT name, steps FROM aidb.pipelines).';
    END IF;
    DELETE FROM aidb.model_registry m WHERE m.name = delete_model.name;
END
$$;
COMMENT ON FUNCTION aidb.delete_model(text) IS 'Deletes a model and its credentials.';

-- The security bounds (superuser-only settings), as the C module holds them:
-- calling into it loads it first, so a value is never a placeholder that a
-- non-superuser SET before the module was loaded (python/aidb/egress.py).
CREATE FUNCTION aidb._allowed_model_hosts() RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'aidb_allowed_model_hosts_value';
COMMENT ON FUNCTION aidb._allowed_model_hosts() IS
    'The value of aidb.allowed_model_hosts: the hosts model URLs may reach.';
CREATE FUNCTION aidb._allowed_local_paths() RETURNS text
    LANGUAGE c STABLE STRICT PARALLEL SAFE
    AS 'MODULE_PATHNAME', 'aidb_allowed_local_paths_value';
COMMENT ON FUNCTION aidb._allowed_local_paths() IS
    'The value of aidb.allowed_local_paths: the directories file volumes may read.';

CREATE FUNCTION aidb.encode_text(model text, input text) RETURNS vector
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].encode_text(model, input)
$$;
COMMENT ON FUNCTION aidb.encode_text(text, text) IS
    'Embeds one text with the named model.';

CREATE FUNCTION aidb.encode_text_batch(model text, inputs text[]) RETURNS vector[]
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].encode_text_batch(model, inputs)
$$;
COMMENT ON FUNCTION aidb.encode_text_batch(text, text[]) IS
    'Embeds many texts with the named model, in batches sent concurrently; NULLs stay NULL.';
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
-- aidb extension script, part 30: the pipeline functions users call.

CREATE FUNCTION aidb.chunk_text_config(
    desired_length integer,
    max_length integer DEFAULT NULL,
    overlap_length integer DEFAULT 0,
    strategy text DEFAULT 'chars'
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
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

-- Called by the capture function, whose search_path is pg_catalog only; the
-- engine's SQL needs the vector type, so this runs with the path of
-- CREATE EXTENSION (aidb and the schemas of the extensions it requires).
CREATE FUNCTION aidb._process_live(pipeline_id integer, keys text[]) RETURNS void
    LANGUAGE plpython3u
    SET search_path FROM CURRENT
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].process_live(pipeline_id, keys)
$$;

CREATE FUNCTION aidb._run_batch(pipeline_id integer) RETURNS integer
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].run_batch_for_worker(pipeline_id)
$$;
COMMENT ON FUNCTION aidb._run_batch(integer) IS
    'One batch for a worker: returns keys processed, or -1 if the pipeline is failing.';

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
                   '_backlog_' || p.id, aidb._key_type(p))
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

CREATE FUNCTION aidb._key_type(p aidb.pipeline_registry) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a
          WHERE a.attrelid = p.source AND a.attname = p.source_key_column $$;

-- Checks a source_filter, as the caller, without running it: it must be one
-- boolean expression over the source's rows. It is planned twice through a
-- cursor, which is opened and never fetched (so nothing runs) and which
-- refuses a string that holds more than one statement, such as an injection
-- attempt "true); DROP TABLE t; SELECT (true". The bare form gives natural
-- syntax errors and refuses parentheses that close early; the parenthesised
-- form is the one the engine runs, and refuses trailing clauses (ORDER BY).
CREATE FUNCTION aidb._check_source_filter(source regclass, source_filter text) RETURNS void
    LANGUAGE plpgsql
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
-- aidb extension script, part 38: external workers (aidb worker / aidb.Worker)
-- report heartbeats here; aidb.workers shows them beside the background workers.

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
-- aidb extension script, part 40: what users read — pipelines, metrics, errors.

CREATE VIEW aidb.pipelines AS
SELECT p.name,
       coalesce(p.source::text, p.source_volume) AS source,
       p.source_kind AS source_type,
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
-- caller may not read is NULL rather than an error.
CREATE FUNCTION aidb._pipeline_counts(p aidb.pipeline_registry,
    OUT pending bigint, OUT source_records bigint, OUT destination_records bigint)
    LANGUAGE plpgsql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    backlog regclass := to_regclass(format('aidb.%I', '_backlog_' || p.id));
BEGIN
    IF backlog IS NOT NULL AND has_table_privilege(backlog, 'SELECT') THEN
        EXECUTE format('SELECT count(DISTINCT key) FROM %s', backlog) INTO pending;
    END IF;
    -- A source_filter is the owner's SQL and runs with the owner's rights
    -- only (DESIGN.md): other readers, superusers too, get no filtered count.
    IF has_table_privilege(p.source, 'SELECT')
       AND (p.source_filter IS NULL OR p.owner_role::oid = (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)) THEN
        EXECUTE format('SELECT count(*) FROM %s WHERE %s', p.source,
                       coalesce('(' || p.source_filter || E'\n)', 'true')) INTO source_records;
    END IF;
    IF has_table_privilege(p.destination, 'SELECT') THEN
        EXECUTE format('SELECT count(*) FROM %s', p.destination) INTO destination_records;
    END IF;
END
$$;

CREATE FUNCTION aidb._pipeline_status(p aidb.pipeline_registry, pending bigint,
    source_records bigint, destination_records bigint, record_errors bigint,
    blocking_errors bigint, temporary_errors bigint, worker_state text)
    RETURNS text
    LANGUAGE sql IMMUTABLE
    AS $$
SELECT CASE
    WHEN blocking_errors > 0 THEN 'BlockingErrors'
    WHEN temporary_errors > 0 AND pending > 0 THEN 'Failed'
    WHEN worker_state = 'WaitingForWorker' THEN 'WaitingForWorker'
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
       CASE WHEN p.source_kind = 'volume' THEN s.objects_seen ELSE c.source_records END
           AS "count(source records)",
       c.destination_records AS "count(destination records)",
       aidb._pipeline_status(p, c.pending, c.source_records, c.destination_records,
                             e.record_errors, e.blocking_errors, e.temporary_errors, w.state) AS "Status",
       e.record_errors AS "count(record errors)",
       e.blocking_errors AS "count(blocking errors)",
       w.state AS "worker state",
       w.pid AS "worker pid",
       greatest(s.last_run, w.last_batch) AS "last run",
       round(coalesce(w.rows_per_second, s.last_rate)::numeric, 1) AS "rows/s",
       -- Like aidb.pipeline_errors, for the pipeline's owner only.
       CASE WHEN aidb._owns_pipeline(p.id) THEN s.last_error END AS "last error",
       (SELECT string_agg(ic.relname, ', ' ORDER BY ic.relname)
        FROM pg_catalog.pg_index i
        JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
        JOIN pg_catalog.pg_am am ON am.oid = ic.relam
        WHERE i.indrelid = p.destination AND am.amname IN ('hnsw', 'ivfflat')) AS "vector index",
       (SELECT count(*) FROM aidb.worker_heartbeats h
        WHERE p.name = ANY (h.pipelines) AND aidb._external_worker_alive(h)) AS "external workers"
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
-- aidb extension script, part 50: retrieval — nearest neighbours of a query
-- text in a pipeline's destination, embedded with the pipeline's own model
-- and compared with the pipeline's own distance operator.
--
-- Both functions run with the caller's rights: they read the destination
-- table, so the caller needs SELECT on it. To filter on source columns, ask
-- for more results and join them with the source on the key, e.g.
--     SELECT r.*, d.title FROM aidb.retrieve_key('docs', 'query', 50) r
--     JOIN docs d ON d.id::text = r.key WHERE d.published ORDER BY r.distance LIMIT 5;

CREATE FUNCTION aidb._retrieve(pipeline_name text, query text, topk integer, deduplicate boolean)
    RETURNS TABLE (key text, part_id integer, value text, distance double precision)
    LANGUAGE plpgsql STABLE
    SET search_path FROM CURRENT     -- the schemas of aidb and vector, fixed at CREATE EXTENSION
    AS $$
DECLARE
    p        aidb.pipeline_registry;
    kb       jsonb;
    operator text;
BEGIN
    SELECT * INTO p FROM aidb.pipeline_registry r WHERE r.name = pipeline_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'pipeline "%" does not exist', pipeline_name
            USING ERRCODE = 'undefined_object', HINT = 'See SELECT name FROM aidb.pipelines.';
    END IF;
    IF topk IS NULL OR topk < 1 THEN
        RAISE EXCEPTION 'topk must be at least 1, not %', coalesce(topk::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Checked before the query is embedded, and named plainly.
    IF NOT (has_schema_privilege((SELECT c.relnamespace FROM pg_catalog.pg_class c
                                  WHERE c.oid = p.destination), 'USAGE')
            AND has_table_privilege(p.destination, 'SELECT')) THEN
        RAISE EXCEPTION 'permission denied for the destination % of pipeline "%"',
            p.destination, pipeline_name
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Its owner can GRANT SELECT on it (and USAGE on its schema).';
    END IF;
    kb := p.steps -> -1;
    IF kb ->> 'operation' <> 'KnowledgeBase' THEN
        RAISE EXCEPTION 'pipeline "%" stores no embeddings (its last step is %)',
            pipeline_name, kb ->> 'operation' USING ERRCODE = 'feature_not_supported';
    END IF;
    operator := CASE kb -> 'options' ->> 'distance_operator'
                    WHEN 'Cosine' THEN '<=>' WHEN 'InnerProduct' THEN '<#>' ELSE '<->' END;
    -- The inner ORDER BY ... LIMIT is what a vector index answers. With
    -- deduplicate, each key keeps its best part, from 20 candidates per
    -- wanted key (approximate when one key has more than 20 better parts).
    RETURN QUERY EXECUTE format($q$
        SELECT c.k, c.part_id, c.value, c.distance
        FROM (SELECT candidates.*, row_number() OVER (PARTITION BY candidates.k
                                                     ORDER BY candidates.distance) AS rank
              FROM (SELECT d.source_key::text AS k, d.part_id, d.value,
                           (d.embedding %1$s $1)::float8 AS distance
                    FROM %2$s d ORDER BY d.embedding %1$s $1 LIMIT $2) candidates) c
        WHERE c.rank = 1 OR NOT $4
        ORDER BY c.distance, c.k, c.part_id LIMIT $3 $q$, operator, p.destination)
    USING aidb.encode_text(kb -> 'options' ->> 'model', query),
          CASE WHEN deduplicate THEN topk * 20 ELSE topk END, topk, deduplicate;
END
$$;

CREATE FUNCTION aidb.retrieve_key(pipeline text, query text, topk integer DEFAULT 1,
                                  deduplicate boolean DEFAULT true)
    RETURNS TABLE (key text, part_id integer, distance double precision)
    LANGUAGE sql STABLE
    AS $$ SELECT r.key, r.part_id, r.distance FROM aidb._retrieve(pipeline, query, topk, deduplicate) r $$;
COMMENT ON FUNCTION aidb.retrieve_key(text, text, integer, boolean) IS
    'The topk source keys nearest to a query text (one row per key unless deduplicate => false).';

CREATE FUNCTION aidb.retrieve_text(pipeline text, query text, topk integer DEFAULT 1,
                                   deduplicate boolean DEFAULT true)
    RETURNS TABLE (key text, part_id integer, value text, distance double precision)
    LANGUAGE sql STABLE
    AS $$ SELECT * FROM aidb._retrieve(pipeline, query, topk, deduplicate) $$;
COMMENT ON FUNCTION aidb.retrieve_text(text, text, integer, boolean) IS
    'Like retrieve_key, with the stored value (the embedded chunk) of each result.';
-- aidb extension script, part 55: option builders of the document steps
-- ParseHtml, ParsePdf, PerformOcr and SummarizeText. Like chunk_text_config,
-- they only assemble jsonb (a NULL argument means "the step's default");
-- the engine checks the values when a pipeline is created.

CREATE FUNCTION aidb.html_parse_config(
    method text DEFAULT 'StructuredPlaintext'
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('method', method)) $$;
COMMENT ON FUNCTION aidb.html_parse_config(text) IS
    'Options of step ParseHtml: method ''StructuredPlaintext'' (one line per heading, '
    'paragraph, list item) or ''StructuredMarkdown'' (headings, lists, emphasis, links, code as Markdown).';

CREATE FUNCTION aidb.pdf_parse_config(
    method text DEFAULT 'Text',
    allow_partial_parsing boolean DEFAULT false
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
              'method', method, 'allow_partial_parsing', allow_partial_parsing)) $$;
COMMENT ON FUNCTION aidb.pdf_parse_config(text, boolean) IS
    'Options of step ParsePdf (one part per page): method ''Text'' (the text layer), and whether '
    'pages that cannot be read are skipped (allow_partial_parsing) instead of failing the document.';

CREATE FUNCTION aidb.ocr_config(
    language text DEFAULT 'eng',
    psm integer DEFAULT NULL
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
              'language', language, 'psm', psm)) $$;
COMMENT ON FUNCTION aidb.ocr_config(text, integer) IS
    'Options of step PerformOcr (Tesseract): language code(s) such as ''eng'' or ''eng+deu'', '
    'and optionally the page segmentation mode (psm, e.g. 6 = one block of text).';

CREATE FUNCTION aidb.summarize_text_config(
    model text,
    max_length integer DEFAULT 120,
    prompt text DEFAULT NULL
) RETURNS jsonb
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
              'model', model, 'max_length', max_length, 'prompt', prompt)) $$;
COMMENT ON FUNCTION aidb.summarize_text_config(text, integer, text) IS
    'Options of step SummarizeText: a model of provider openai_completions, the summary''s '
    'maximum length in words, and optionally the instructions (prompt) replacing the default ones.';
-- aidb extension script, part 60: volumes — files in a local directory
-- (file:///dir) or objects in an S3 bucket (s3://bucket/prefix) that
-- pipelines read (python/aidb/volumes/).
--
-- Like models: definitions are public (aidb.volumes); credentials sit in
-- their own table that row-level security limits to the volume's owner (and
-- superusers). Local directories must lie inside aidb.allowed_local_paths,
-- which only superusers set; checked at creation and at every use.

CREATE TABLE aidb.volume_registry (
    name        text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 63),
    uri         text NOT NULL,
    options     jsonb NOT NULL DEFAULT '{}',
    owner       regrole NOT NULL DEFAULT pg_catalog.quote_ident(current_user)::regrole,
    created_at  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE aidb.volume_registry IS
    'Volumes known to aidb. Use aidb.create_volume() / aidb.delete_volume(); read aidb.volumes.';

CREATE TABLE aidb.volume_credentials (
    volume      text PRIMARY KEY REFERENCES aidb.volume_registry (name) ON DELETE CASCADE,
    credentials jsonb NOT NULL
);
COMMENT ON TABLE aidb.volume_credentials IS
    'S3 credentials of volumes; each row is visible only to the volume''s owner.';

ALTER TABLE aidb.volume_registry ENABLE ROW LEVEL SECURITY;
CREATE POLICY anyone_reads ON aidb.volume_registry FOR SELECT USING (true);
CREATE POLICY owner_writes ON aidb.volume_registry FOR ALL
    USING (pg_catalog.pg_has_role(owner, 'MEMBER'))
    WITH CHECK (pg_catalog.pg_has_role(owner, 'MEMBER'));

ALTER TABLE aidb.volume_credentials ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON aidb.volume_credentials FOR ALL
    USING (EXISTS (SELECT FROM aidb.volume_registry v
                   WHERE v.name = volume AND pg_catalog.pg_has_role(v.owner, 'MEMBER')))
    WITH CHECK (EXISTS (SELECT FROM aidb.volume_registry v
                        WHERE v.name = volume AND pg_catalog.pg_has_role(v.owner, 'MEMBER')));

GRANT SELECT ON aidb.volume_registry, aidb.volume_credentials TO PUBLIC;
GRANT INSERT, DELETE ON aidb.volume_registry, aidb.volume_credentials TO aidb_users;

SELECT pg_catalog.pg_extension_config_dump('aidb.volume_registry', '');
SELECT pg_catalog.pg_extension_config_dump('aidb.volume_credentials', '');

CREATE VIEW aidb.volumes AS
SELECT v.name,
       v.uri,
       v.options,
       v.owner,
       EXISTS (SELECT FROM aidb.volume_credentials c WHERE c.volume = v.name) AS has_credentials,
       v.created_at
FROM aidb.volume_registry v;
COMMENT ON VIEW aidb.volumes IS
    'Registered volumes: name, uri, options (without secrets), owner, whether credentials are set.';
GRANT SELECT ON aidb.volumes TO PUBLIC;

CREATE FUNCTION aidb.create_volume(
    name text,
    uri text,
    options jsonb DEFAULT '{}'
) RETURNS void
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
GD["aidb"].create_volume(name, uri, options)
$$;
COMMENT ON FUNCTION aidb.create_volume(text, text, jsonb) IS
    'Registers a volume: file:///dir (inside aidb.allowed_local_paths) or s3://bucket/prefix '
    '(options: endpoint_url, region, force_path_style, max_object_size, and the credentials '
    'access_key_id, secret_access_key, session_token, which are stored apart).';

CREATE FUNCTION aidb.delete_volume(name text) RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    volume_owner regrole;
BEGIN
    PERFORM aidb._require_aidb_user('delete volumes');
    SELECT v.owner INTO volume_owner FROM aidb.volume_registry v WHERE v.name = delete_volume.name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'volume "%" does not exist', delete_volume.name
            USING ERRCODE = 'undefined_object',
                  HINT = 'See SELECT name FROM aidb.volumes.';
    END IF;
    IF NOT pg_has_role(volume_owner, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to delete volume "%"', delete_volume.name
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = format('The volume belongs to role %s.', volume_owner);
    END IF;
    -- A pipeline reading the volume would fail at its next scan.
    IF EXISTS (SELECT FROM aidb.pipeline_registry p WHERE p.source_volume = delete_volume.name) THEN
        RAISE EXCEPTION 'volume "%" is used by pipeline "%"', delete_volume.name,
            (SELECT p.name FROM aidb.pipeline_registry p
             WHERE p.source_volume = delete_volume.name ORDER BY p.name LIMIT 1)
            USING ERRCODE = 'dependent_objects_still_exist',
                  HINT = 'Delete the pipelines that read it first (aidb.delete_pipeline()).';
    END IF;
    DELETE FROM aidb.volume_registry v WHERE v.name = delete_volume.name;
END
$$;
COMMENT ON FUNCTION aidb.delete_volume(text) IS 'Deletes a volume and its credentials.';

CREATE FUNCTION aidb.list_volume(name text)
    RETURNS TABLE (key text, size bigint, last_modified timestamptz, etag text)
    LANGUAGE plpython3u
    AS $$
if "aidb" not in GD: plpy.execute("SELECT aidb._engine_init()")
return GD["aidb"].list_volume(name)
$$;
COMMENT ON FUNCTION aidb.list_volume(text) IS
    'Every object of a volume, in key order: key (relative to the directory or prefix), '
    'size in bytes, last_modified, etag.';
