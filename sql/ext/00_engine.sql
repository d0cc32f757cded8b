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
    SET search_path = pg_catalog, pg_temp
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
