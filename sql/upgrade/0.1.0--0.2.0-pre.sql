-- aidb upgrade 0.1.0 -> 0.2.0, step 1 of 3 (docs/architecture.md, "Extension
-- lifecycle"): make room for the new code.
--
-- Tables keep their data and shape (one index changes, at the end of this
-- step); functions (signatures too), views,
-- triggers and event triggers do. Rather than one ALTER or DROP per changed
-- object, this drops every function, view and event trigger of the
-- extension with CASCADE, which also takes along what calls them: the
-- capture triggers on sources, the triggers and the RLS policies on aidb's
-- tables that call aidb functions. Step 2 (the install script without its
-- table sections) creates them all again; step 3 rebuilds each pipeline's
-- own objects. All in the one transaction of ALTER EXTENSION: the sources
-- stay locked from the drop of their triggers to the commit.

\echo Use "ALTER EXTENSION aidb UPDATE TO '0.2.0'" to load this file. \quit

DO $pre$
DECLARE
    ext oid := (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname = 'aidb');
    blockers text;
    object record;
    messages text := pg_catalog.current_setting('client_min_messages');
BEGIN
    -- A CASCADE must not take a user's object along: refuse, naming them,
    -- if anything outside aidb depends on an aidb function or view. Not
    -- counted as outside: members of the extension, objects of schema aidb
    -- (each pipeline's own, rebuilt by step 3), the capture triggers aidb
    -- put on sources, and the parts (rules, triggers, policies, defaults,
    -- constraints) of any of those.
    WITH members AS (
        SELECT d.classid, d.objid FROM pg_catalog.pg_depend d
        WHERE d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
          AND d.refobjid = ext AND d.deptype = 'e'
    ), dropped AS (
        SELECT m.classid, m.objid FROM members m
        WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
           OR (m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = m.objid)
                   IN ('v', 'm'))
    ), dependents AS (
        SELECT DISTINCT d.classid, d.objid, d.refclassid, d.refobjid,
               -- the relation or function a dependent object is part of
               CASE d.classid
                   WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
                       (SELECT r.ev_class FROM pg_catalog.pg_rewrite r WHERE r.oid = d.objid)
                   WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
                       (SELECT t.tgrelid FROM pg_catalog.pg_trigger t WHERE t.oid = d.objid)
                   WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN
                       (SELECT p.polrelid FROM pg_catalog.pg_policy p WHERE p.oid = d.objid)
                   WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN
                       (SELECT a.adrelid FROM pg_catalog.pg_attrdef a WHERE a.oid = d.objid)
                   WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN
                       (SELECT c.conrelid FROM pg_catalog.pg_constraint c WHERE c.oid = d.objid)
                   WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN d.objid
               END AS relation
        FROM pg_catalog.pg_depend d
        JOIN dropped x ON x.classid = d.refclassid AND x.objid = d.refobjid
        WHERE d.deptype IN ('n', 'a')
    )
    SELECT pg_catalog.string_agg(pg_catalog.format('%s (uses %s)',
               pg_catalog.pg_describe_object(o.classid, o.objid, 0),
               pg_catalog.pg_describe_object(o.refclassid, o.refobjid, 0)), E'\n'
               ORDER BY 1)
    INTO blockers
    FROM dependents o
    WHERE NOT EXISTS (SELECT FROM members m WHERE m.classid = o.classid AND m.objid = o.objid)
      AND NOT EXISTS (SELECT FROM members m
                      WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                        AND m.objid = o.relation)
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                      WHERE c.oid = o.relation AND c.relnamespace = 'aidb'::pg_catalog.regnamespace)
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_proc f
                      WHERE o.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                        AND f.oid = o.objid
                        AND f.pronamespace = 'aidb'::pg_catalog.regnamespace)
      AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger t
                      JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
                      WHERE o.classid = 'pg_catalog.pg_trigger'::pg_catalog.regclass
                        AND t.oid = o.objid
                        AND f.pronamespace = 'aidb'::pg_catalog.regnamespace
                        AND t.tgname ~ '^aidb_[0-9]+_(insert|update|delete|truncate)$');
    IF blockers IS NOT NULL THEN
        RAISE EXCEPTION 'cannot update extension aidb: objects outside aidb use its functions '
                        'or views'
            USING ERRCODE = 'dependent_objects_still_exist',
                  DETAIL = blockers,
                  HINT = 'The update replaces every aidb function and view. Drop these objects '
                         '(save their definitions first), run ALTER EXTENSION aidb UPDATE, then '
                         'create them again.';
    END IF;

    -- Event triggers first: they would fire on the drops below.
    FOR object IN
        SELECT pg_catalog.format('DROP EVENT TRIGGER %I', t.evtname) AS statement
        FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_event_trigger t ON t.oid = d.objid
        WHERE d.classid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass
          AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
          AND d.refobjid = ext AND d.deptype = 'e'
        UNION ALL
        SELECT * FROM (
            SELECT pg_catalog.format('DROP VIEW IF EXISTS %s CASCADE', d.objid::pg_catalog.regclass)
            FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid
            WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND c.relkind = 'v'
              AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
              AND d.refobjid = ext AND d.deptype = 'e'
            ORDER BY c.oid) v
        UNION ALL
        SELECT * FROM (
            SELECT pg_catalog.format('DROP FUNCTION IF EXISTS %s CASCADE',
                                     d.objid::pg_catalog.regprocedure)
            FROM pg_catalog.pg_depend d
            WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
              AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
              AND d.refobjid = ext AND d.deptype = 'e'
            ORDER BY d.objid) f
    LOOP
        -- IF EXISTS: an earlier CASCADE may have taken the object already.
        -- Quietly: a notice per cascaded object would only hide warnings.
        PERFORM pg_catalog.set_config('client_min_messages', 'warning', true);
        EXECUTE object.statement;
        PERFORM pg_catalog.set_config('client_min_messages', messages, true);
    END LOOP;
END
$pre$;

-- What 0.2.0 changed in 0.1.0's tables (the install parts make it in their
-- skipped sections). Before the code: SQL functions are checked against the
-- tables when they are created.

-- Record errors are unique by the key's md5: a key may be too long for a
-- btree entry of (pipeline_id, key) (20_pipelines.sql).
DROP INDEX aidb.pipeline_error_log_record;
CREATE UNIQUE INDEX pipeline_error_log_record
    ON aidb.pipeline_error_log (pipeline_id, pg_catalog.md5(source_key))
    WHERE source_key IS NOT NULL;

-- One name for a pipeline's kind of source: source_type, as 0.1.0's
-- aidb.pipelines view already called it (docs/architecture.md, "Names").
ALTER TABLE aidb.pipeline_registry RENAME COLUMN source_kind TO source_type;
ALTER TABLE aidb.pipeline_registry
    RENAME CONSTRAINT pipeline_registry_source_kind_check TO pipeline_registry_source_type_check;
-- PostgreSQL 18 keeps NOT NULL as a named constraint too, named after the column.
DO $rename$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_constraint
               WHERE conrelid = 'aidb.pipeline_registry'::pg_catalog.regclass
                 AND conname = 'pipeline_registry_source_kind_not_null') THEN
        ALTER TABLE aidb.pipeline_registry RENAME CONSTRAINT
            pipeline_registry_source_kind_not_null TO pipeline_registry_source_type_not_null;
    END IF;
END
$rename$;

-- The pre-registered model runs on OpenVINO, as in a fresh install
-- (10_models.sql), unless its owner changed it. Local models a user made
-- keep torch: a config without "backend" means torch (local_embeddings.py).
UPDATE aidb.model_registry
   SET config = config || '{"backend": "openvino", "device": "auto", "max_batch_size": 16}'
 WHERE name = 'minilm' AND provider = 'local_embeddings'
   AND config = '{"model": "all-MiniLM-L6-v2", "max_batch_size": 64}';
