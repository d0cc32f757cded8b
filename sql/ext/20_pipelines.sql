-- aidb extension script, part 20: pipelines — their registry, run statistics
-- and errors. The per-pipeline objects (backlog, state, the owner's
-- functions, capture triggers) are made by part 25.

-- upgrade: skip begin
CREATE TABLE aidb.pipeline_registry (
    id                       integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                     text NOT NULL UNIQUE,
    source                   regclass,             -- a table or view, or
    source_volume            text,                 -- a volume (aidb.volumes)
    source_type              text NOT NULL CHECK (source_type IN ('table', 'view', 'volume')),
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
    CHECK (CASE source_type WHEN 'volume' THEN source IS NULL AND source_volume IS NOT NULL
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
-- By the key's md5: a key may be as long as the source's own index allows,
-- and (pipeline_id, key) would then be too wide for a btree entry.
CREATE UNIQUE INDEX pipeline_error_log_record
    ON aidb.pipeline_error_log (pipeline_id, pg_catalog.md5(source_key))
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
-- upgrade: skip end

CREATE FUNCTION aidb._owns_pipeline(pipeline_id integer) RETURNS boolean
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT FROM aidb.pipeline_registry p
                         WHERE p.id = pipeline_id AND pg_has_role(p.owner_role, 'MEMBER')) $$;

-- Run statistics hold the last error's message, so they are the owner's
-- too; aidb.pipem shows everyone the rest.
-- (Outside the upgrade's skipped sections: an upgrade drops aidb's functions
-- with CASCADE, these policies with them, and creates them again here.)
ALTER TABLE aidb.pipeline_run_stats ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON aidb.pipeline_run_stats FOR ALL
    USING (aidb._owns_pipeline(pipeline_id)) WITH CHECK (aidb._owns_pipeline(pipeline_id));
ALTER TABLE aidb.pipeline_error_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY owner_only ON aidb.pipeline_error_log FOR ALL
    USING (aidb._owns_pipeline(pipeline_id)) WITH CHECK (aidb._owns_pipeline(pipeline_id));

-- Only aidb users create, change and delete pipelines. The bookkeeping is
-- written by runs, as the pipeline's owner (Live triggers fire for whoever
-- writes the source); row-level security limits it to the owner's pipelines.
-- upgrade: skip begin
GRANT SELECT ON aidb.pipeline_registry, aidb.pipeline_run_stats, aidb.pipeline_error_log TO PUBLIC;
GRANT INSERT, UPDATE, DELETE ON aidb.pipeline_registry TO aidb_users;
GRANT INSERT, UPDATE, DELETE ON aidb.pipeline_run_stats, aidb.pipeline_error_log TO PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('aidb.pipeline_registry', '');
-- upgrade: skip end
-- The id sequence too: after a restore, new pipelines must not reuse ids.
SELECT pg_catalog.pg_extension_config_dump('aidb.pipeline_registry_id_seq', '');


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
