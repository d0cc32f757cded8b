"""aidb._depend_on_extension (src/dependency.c): a pipeline's own objects
depend on extension aidb, so that DROP EXTENSION aidb refuses while they
exist and DROP EXTENSION aidb CASCADE removes them — and nothing outside
schema aidb can be tied to the extension that way."""

import uuid

import psycopg
import pytest

DEPEND = "SELECT aidb._depend_on_extension(%s::regclass, %s::oid)"


def depend(conn, classid, objid):
    conn.execute(DEPEND, (classid, objid))


def dependencies_on_aidb(conn, classid, objid):
    """pg_depend rows: the object depends normally on extension aidb."""
    return conn.execute(
        "SELECT count(*) FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid "
        "WHERE d.classid = %s::regclass AND d.objid = %s::oid AND d.refclassid = "
        "'pg_extension'::regclass AND e.extname = 'aidb' AND d.deptype = 'n'",
        (classid, objid)).fetchone()[0]


def oid_of(conn, expression):
    return conn.execute(f"SELECT {expression}::oid").fetchone()[0]


def test_drop_extension_refuses_then_cascade_removes(conn):
    conn.execute("CREATE TABLE aidb._backlog_test (key int)")
    conn.execute("CREATE FUNCTION aidb._capture_test() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    table = oid_of(conn, "'aidb._backlog_test'::regclass")
    function = oid_of(conn, "'aidb._capture_test()'::regprocedure")
    depend(conn, "pg_class", table)
    depend(conn, "pg_proc", function)
    depend(conn, "pg_class", table)       # a second call changes nothing
    assert dependencies_on_aidb(conn, "pg_class", table) == 1
    assert dependencies_on_aidb(conn, "pg_proc", function) == 1

    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as refused:
        conn.execute("DROP EXTENSION aidb")
    assert "table aidb._backlog_test depends on extension aidb" in refused.value.diag.message_detail
    assert conn.execute("SELECT to_regclass('aidb._backlog_test')").fetchone()[0] is not None

    conn.execute("DROP EXTENSION aidb CASCADE")
    assert conn.execute("SELECT to_regclass('aidb._backlog_test'), "
                        "to_regprocedure('aidb._capture_test()')").fetchone() == (None, None)


def test_objects_outside_schema_aidb_are_refused(conn):
    conn.execute("CREATE TABLE public.precious (id int)")
    conn.execute("CREATE FUNCTION public.precious_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    for classid, expression in [("pg_class", "'public.precious'::regclass"),
                                ("pg_proc", "'public.precious_fn()'::regprocedure")]:
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is not in schema aidb"):
            depend(conn, classid, oid_of(conn, expression))
    conn.execute("DROP EXTENSION aidb CASCADE")
    assert conn.execute("SELECT to_regclass('public.precious') IS NOT NULL, "
                        "to_regprocedure('public.precious_fn()') IS NOT NULL").fetchone() == \
        (True, True)


def test_other_objects_are_refused(conn):
    """Members of the extension, missing objects, and other catalogs."""
    registry = oid_of(conn, "'aidb.pipeline_registry'::regclass")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="member of an extension"):
        depend(conn, "pg_class", registry)
    with pytest.raises(psycopg.errors.UndefinedObject, match="does not exist"):
        depend(conn, "pg_class", 4000000000)
    schema = oid_of(conn, "'aidb'::regnamespace")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="only relations"):
        depend(conn, "pg_namespace", schema)


def test_not_callable_by_other_roles(cluster, dbname, conn):
    role = "r_" + uuid.uuid4().hex[:10]
    conn.execute(f"CREATE ROLE {role} LOGIN")
    try:
        conn.execute("CREATE TABLE aidb.mine (id int)")
        table = oid_of(conn, "'aidb.mine'::regclass")
        conn.execute(f"GRANT USAGE ON SCHEMA aidb TO {role}")
        with psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True) as other:
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="permission denied for function _depend_on_extension"):
                depend(other, "pg_class", table)
        assert dependencies_on_aidb(conn, "pg_class", table) == 0
    finally:
        conn.execute(f"DROP OWNED BY {role}; DROP ROLE {role}")
