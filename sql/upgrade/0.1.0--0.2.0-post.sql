-- aidb upgrade 0.1.0 -> 0.2.0, step 3 of 3: rebuild every pipeline's own
-- objects with the new code (aidb._build_pipeline_objects, from the
-- catalogs). For 0.1.0's pipelines that converts backlog and state to
-- aidb's (owned by the extension owner, the owner granted rows only, no
-- backlog index, a NULL-able hash), and adds the owner's SECURITY DEFINER
-- functions and the capture triggers. Queued keys, states and destinations
-- are kept as they are.
--
-- A pipeline that cannot be rebuilt (its source was dropped, say) does not
-- fail the upgrade: it is blocked with a PipelinePermanent error that says
-- why, and a WARNING names it.
--
-- Objects created by an extension script become members of the extension,
-- and CREATE ... IF NOT EXISTS / CREATE OR REPLACE refuse an existing
-- object that is not one. A pipeline's objects must not be members (pg_dump
-- carries them as data; DROP EXTENSION refuses while they exist): so they
-- are made members for the moment of the rebuild, and
-- aidb._depend_on_extension, which the rebuild calls on each, turns that
-- membership back into the ordinary dependency (src/dependency.c).

DO $post$
DECLARE
    p aidb.pipeline_registry;
    object record;
    problem text;
    k record;
    -- A pipeline's functions aidb._<kind>_<id> (25_pipeline_objects.sql).
    kinds text := 'capture|source|drift|count|all_keys|destination';
BEGIN
    FOR p IN SELECT * FROM aidb.pipeline_registry r ORDER BY r.id LOOP
        BEGIN
            FOR object IN
                SELECT pg_catalog.format('ALTER EXTENSION aidb ADD TABLE %s',
                                         c.oid::pg_catalog.regclass) AS statement
                FROM pg_catalog.pg_class c
                WHERE c.relnamespace = 'aidb'::pg_catalog.regnamespace AND c.relkind = 'r'
                  AND c.relname IN ('_backlog_' || p.id, '_state_' || p.id)
                  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                                  WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                    AND d.objid = c.oid AND d.deptype = 'e')
                UNION ALL
                SELECT pg_catalog.format('ALTER EXTENSION aidb ADD FUNCTION %s',
                                         f.oid::pg_catalog.regprocedure)
                FROM pg_catalog.pg_proc f
                WHERE f.pronamespace = 'aidb'::pg_catalog.regnamespace
                  AND f.proname ~ ('^_(' || kinds || ')_' || p.id || '$')
                  AND NOT EXISTS (SELECT FROM pg_catalog.pg_depend d
                                  WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                                    AND d.objid = f.oid AND d.deptype = 'e')
            LOOP
                EXECUTE object.statement;
            END LOOP;

            PERFORM aidb._build_pipeline_objects(p);

            -- 0.1.0 typed the keys of backlog and state as the source column
            -- (a domain too); 0.2.0 as its base type, with the column's
            -- collation, which is what capture checks (binary-compatible: no
            -- rewrite for a domain).
            k := aidb._pipeline_key(p);
            FOR object IN
                SELECT c.oid::pg_catalog.regclass AS name
                FROM pg_catalog.pg_class c JOIN pg_catalog.pg_attribute a
                  ON a.attrelid = c.oid AND a.attname = 'key'
                WHERE c.relnamespace = 'aidb'::pg_catalog.regnamespace AND c.relkind = 'r'
                  AND c.relname IN ('_backlog_' || p.id, '_state_' || p.id)
                  AND (a.atttypid <> k.key_type::pg_catalog.regtype
                       OR a.attcollation <> coalesce(
                              (SELECT co.oid FROM pg_catalog.pg_collation co
                               JOIN pg_catalog.pg_namespace n ON n.oid = co.collnamespace
                               WHERE k.key_collation = pg_catalog.format(' COLLATE %I.%I',
                                                                          n.nspname, co.collname)),
                              (SELECT t.typcollation FROM pg_catalog.pg_type t
                               WHERE t.oid = k.key_type::pg_catalog.regtype)))
            LOOP
                EXECUTE pg_catalog.format('ALTER TABLE %s ALTER COLUMN key TYPE %s%s',
                                          object.name, k.key_type, k.key_collation);
            END LOOP;

            -- What the rebuild did not make again (none today): out of the
            -- extension too, tied to it as the rebuild ties the others.
            FOR object IN
                SELECT 'TABLE' AS kind, c.oid::pg_catalog.regclass::text AS name,
                       'pg_catalog.pg_class'::pg_catalog.regclass AS classid, c.oid
                FROM pg_catalog.pg_class c JOIN pg_catalog.pg_depend d
                  ON d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                 AND d.deptype = 'e'
                WHERE c.relnamespace = 'aidb'::pg_catalog.regnamespace AND c.relkind = 'r'
                  AND c.relname IN ('_backlog_' || p.id, '_state_' || p.id)
                UNION ALL
                SELECT 'FUNCTION', f.oid::pg_catalog.regprocedure::text,
                       'pg_catalog.pg_proc'::pg_catalog.regclass, f.oid
                FROM pg_catalog.pg_proc f JOIN pg_catalog.pg_depend d
                  ON d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = f.oid
                 AND d.deptype = 'e'
                WHERE f.pronamespace = 'aidb'::pg_catalog.regnamespace
                  AND f.proname ~ ('^_(' || kinds || ')_' || p.id || '$')
            LOOP
                EXECUTE pg_catalog.format('ALTER EXTENSION aidb DROP %s %s',
                                          object.kind, object.name);
                PERFORM aidb._depend_on_extension(object.classid, object.oid);
            END LOOP;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
            RAISE WARNING 'aidb pipeline "%" could not be rebuilt by the update: %',
                p.name, problem
                USING HINT = pg_catalog.format('It is blocked until fixed; see SELECT * FROM '
                                               'aidb.pipeline_errors WHERE pipeline = %L.', p.name);
            INSERT INTO aidb.pipeline_error_log AS e
                (pipeline_id, source_key, step, category, message)
            VALUES (p.id, NULL, 'upgrade', 'PipelinePermanent', pg_catalog.format(
                'ALTER EXTENSION aidb UPDATE could not rebuild this pipeline''s objects: %s; '
                'fix the cause and run aidb.retry_pipeline_errors(%L), or delete the pipeline '
                'with aidb.delete_pipeline(%L)', problem, p.name, p.name))
            ON CONFLICT (pipeline_id, category) WHERE source_key IS NULL DO UPDATE
            SET step = EXCLUDED.step, message = EXCLUDED.message,
                attempts = e.attempts + 1, last_attempt = pg_catalog.now();
        END;
    END LOOP;

    -- Workers that ran the new engine against the old SQL recorded that
    -- mismatch and are backing off: clearing it wakes them now.
    DELETE FROM aidb.pipeline_error_log e
    WHERE e.source_key IS NULL AND e.step = 'worker'
      AND e.message LIKE '%aidb''s SQL objects in this database are version %';
END
$post$;
