-- aidb extension script, part 70: event triggers.
--
-- A pipeline's owner owns the SECURITY DEFINER functions aidb built for it
-- (part 25), and PostgreSQL lets an owner ALTER what it owns: made SECURITY
-- INVOKER, given another search_path or a `SET role`, such a function would
-- run the owner's SQL with the rights of whoever runs the pipeline (a
-- superuser's run_pipeline, a monitor reading aidb.pipem). So no DDL on an
-- object in schema aidb is allowed but a superuser's (aidb's own installer
-- runs as one); aidb._owner_function_problem() is the second line, checked
-- by the engine before it calls an owner's function (python/aidb/pipeline/
-- guard.py) and by aidb.pipem before it counts.

-- ALTER FUNCTION / ROUTINE / TABLE, COMMENT, CREATE ... on anything in
-- schema aidb, by anyone but a superuser: refused. (An event trigger's
-- function runs as the user whose command fired it, without an EXECUTE
-- check; what it calls is checked, hence the superuser test inline.)
CREATE FUNCTION aidb._guard_aidb_objects() RETURNS event_trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    command record;
BEGIN
    IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        RETURN;
    END IF;
    FOR command IN
        SELECT * FROM pg_catalog.pg_event_trigger_ddl_commands() c
        WHERE c.schema_name = 'aidb'
           OR (c.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
               AND EXISTS (SELECT FROM pg_catalog.pg_proc f WHERE f.oid = c.objid
                           AND f.pronamespace = 'aidb'::pg_catalog.regnamespace))
           OR (c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
               AND EXISTS (SELECT FROM pg_catalog.pg_class r WHERE r.oid = c.objid
                           AND r.relnamespace = 'aidb'::pg_catalog.regnamespace))
    LOOP
        RAISE EXCEPTION 'permission denied: % on % is reserved to superusers',
            command.command_tag, coalesce(command.object_identity, command.object_type)
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Objects in schema aidb are made by aidb for pipelines; they run a '
                           'pipeline owner''s SQL with the owner''s rights only as aidb made them.',
                  HINT = 'Change a pipeline with aidb.update_pipeline(), or delete it with '
                         'aidb.delete_pipeline() and create it again.';
    END LOOP;
END
$$;

-- GRANT and REVOKE are reported without their objects, so the catalog is
-- checked instead: a function of schema aidb that a non-superuser owns (a
-- pipeline's) may be executable by its owner only (and PUBLIC, for the
-- count that aidb.pipem calls), as aidb made it.
CREATE FUNCTION aidb._guard_aidb_grants() RETURNS event_trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    granted record;
BEGIN
    IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        RETURN;
    END IF;
    SELECT f.oid::regprocedure AS function, a.grantee::regrole AS grantee INTO granted
    FROM pg_proc f CROSS JOIN LATERAL aclexplode(f.proacl) a
    JOIN pg_roles o ON o.oid = f.proowner
    WHERE f.pronamespace = 'aidb'::regnamespace AND NOT o.rolsuper
      AND ((a.grantee <> f.proowner AND (a.grantee <> 0 OR f.proname !~ '^_count_[0-9]+$'))
           OR a.is_grantable)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'permission denied: % on % is reserved to superusers', tg_tag, granted.function
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'aidb grants what a pipeline''s functions need itself.';
    END IF;
END
$$;

-- DROP of an object in schema aidb (a pipeline's functions or tables), by
-- anyone but a superuser. aidb.delete_pipeline drops them as aidb.
CREATE FUNCTION aidb._guard_aidb_drops() RETURNS event_trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    dropped record;
BEGIN
    IF (SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user) THEN
        RETURN;
    END IF;
    FOR dropped IN
        SELECT * FROM pg_catalog.pg_event_trigger_dropped_objects() d
        WHERE d.schema_name = 'aidb' AND d.object_type <> 'trigger'
    LOOP
        RAISE EXCEPTION 'permission denied: DROP of % is reserved to superusers', dropped.object_identity
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Delete the pipeline with aidb.delete_pipeline().';
    END LOOP;
END
$$;

CREATE EVENT TRIGGER aidb_guard_aidb_objects ON ddl_command_end
    EXECUTE FUNCTION aidb._guard_aidb_objects();
CREATE EVENT TRIGGER aidb_guard_aidb_grants ON ddl_command_end
    WHEN TAG IN ('GRANT', 'REVOKE')
    EXECUTE FUNCTION aidb._guard_aidb_grants();
CREATE EVENT TRIGGER aidb_guard_aidb_drops ON sql_drop
    EXECUTE FUNCTION aidb._guard_aidb_drops();

-- What is wrong with pipeline `pipeline_id`'s owner functions (aidb._<kind>_<id>),
-- or NULL if each is as the installer made it: SECURITY DEFINER, owned by the
-- pipeline's owner, with exactly search_path = pg_catalog, pg_temp as its
-- settings. Catalog facts only, for whoever runs or monitors the pipeline.
CREATE FUNCTION aidb._owner_function_problem(pipeline_id integer, owner regrole) RETURNS text
    LANGUAGE sql STABLE
    SET search_path = pg_catalog, pg_temp
    AS $$
    SELECT format('%s %s', f.oid::pg_catalog.regprocedure,
                  CASE WHEN NOT f.prosecdef THEN 'is not SECURITY DEFINER'
                       WHEN f.proowner OPERATOR(pg_catalog.<>) owner::pg_catalog.oid
                           THEN pg_catalog.format('belongs to %s, not to the pipeline''s owner %s',
                                                  f.proowner::pg_catalog.regrole, owner)
                       ELSE pg_catalog.format('has settings %s instead of search_path = pg_catalog, pg_temp',
                                              f.proconfig) END)
    FROM pg_catalog.pg_proc f
    WHERE f.pronamespace OPERATOR(pg_catalog.=) 'aidb'::pg_catalog.regnamespace
      AND f.proname OPERATOR(pg_catalog.=) ANY (ARRAY(
          SELECT pg_catalog.format('_%s_%s', k, pipeline_id)
          FROM pg_catalog.unnest(ARRAY['capture', 'source', 'drift', 'count', 'all_keys',
                                       'destination']) AS k)::pg_catalog.name[])
      AND (NOT f.prosecdef OR f.proowner OPERATOR(pg_catalog.<>) owner::pg_catalog.oid
           OR f.proconfig IS DISTINCT FROM ARRAY['search_path=pg_catalog, pg_temp'])
    ORDER BY f.proname
    LIMIT 1
$$;
COMMENT ON FUNCTION aidb._owner_function_problem(integer, regrole) IS
    'aidb internal: NULL, or how one of a pipeline''s owner functions differs from what aidb made';

-- A pipeline's backlog, state and functions depend on the extension
-- (src/dependency.c), so that DROP EXTENSION aidb refuses while they exist
-- and CASCADE removes them. pg_dump carries the objects but not that
-- dependency (it is no membership): when a restore (a superuser: no one
-- else may create objects in schema aidb) creates one of them, it is
-- recorded again here. Recognised by name, since the registry rows arrive
-- later in a restore; objects an extension script makes are left to it.
CREATE FUNCTION aidb._depend_restored_objects() RETURNS event_trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    created record;
BEGIN
    IF NOT coalesce((SELECT r.rolsuper FROM pg_roles r WHERE r.rolname = current_user), false) THEN
        RETURN;
    END IF;
    FOR created IN
        SELECT c.classid, c.objid FROM pg_catalog.pg_event_trigger_ddl_commands() c
        WHERE NOT c.in_extension AND c.schema_name = 'aidb' AND c.objsubid = 0
          AND ((c.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                AND EXISTS (SELECT FROM pg_catalog.pg_class r WHERE r.oid = c.objid
                            AND r.relkind = 'r' AND r.relname ~ '^_(backlog|state)_[0-9]+$'))
            OR (c.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                AND EXISTS (SELECT FROM pg_catalog.pg_proc f WHERE f.oid = c.objid
                            AND f.proname ~ '^_(capture|source|drift|count|all_keys|destination)_[0-9]+$')))
    LOOP
        PERFORM aidb._depend_on_extension(created.classid, created.objid);
    END LOOP;
END
$$;

CREATE EVENT TRIGGER aidb_depend_restored_objects ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'CREATE FUNCTION')
    EXECUTE FUNCTION aidb._depend_restored_objects();
