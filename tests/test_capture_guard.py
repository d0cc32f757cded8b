"""The C capture trigger trusts no layout (issue #12, item 3).

aidb._capture_keys (src/capture.c) appends keys to a pipeline's backlog
through the table AM, without the executor's type checks. A pipeline owner
who changes the type of the source's key column, or anyone who changes the
backlog, must get a clean error from the next write: never a crashed server
(a datum of one type written into a column of another) and never a wrong
key in the backlog.
"""

import contextlib
import uuid

import psycopg
import pytest

from tests.support.common import TEST_API_KEY
from tests.support.pipeline_checks import create_fake_model, create_pipeline

TYPE_CHANGED = "the key column's type changed"
NOT_AIDBS = "is not the table aidb made"
COLUMNS = "its columns are not exactly (key, queued_at timestamptz, keys key[])"


@pytest.fixture
def owner(aidb_user):
    """The pipelines' owner: an aidb user with its own schema (conftest)."""
    return aidb_user


def pipeline_on(user, model_server, key_type, keys):
    """A Disabled pipeline on the owner's table src(id key_type, body): the C
    trigger appends keys, nothing takes them. Returns the backlog's name."""
    create_fake_model(user, model_server.url, TEST_API_KEY)
    user.execute(f"CREATE TABLE src (id {key_type} PRIMARY KEY, body text)")
    for key in keys:
        user.execute("INSERT INTO src VALUES (%s, 'text')", (key,))
    create_pipeline(user, source="src")
    pipeline_id = user.execute("SELECT id FROM aidb.pipeline_registry WHERE name = 'p'"
                               ).fetchone()[0]
    return pipeline_id, f"aidb._backlog_{pipeline_id}"


@contextlib.contextmanager
def aidb_event_triggers_disabled(conn):
    names = [row[0] for row in conn.execute(
        "SELECT t.evtname FROM pg_event_trigger t JOIN pg_depend d "
        "ON d.classid = 'pg_event_trigger'::regclass AND d.objid = t.oid AND d.deptype = 'e' "
        "JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'aidb'")]
    for name in names:
        conn.execute(f'ALTER EVENT TRIGGER "{name}" DISABLE')
    try:
        yield
    finally:
        for name in names:
            conn.execute(f'ALTER EVENT TRIGGER "{name}" ENABLE')


def postmaster_started(cluster):
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        return admin.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def backlog_rows(conn, backlog):
    """The backlog's rows as text, whatever its columns are now."""
    return sorted(row[0] for row in conn.execute(f"SELECT b::text FROM {backlog} b"))


def wrong_keys(conn, backlog, schema):
    """Queued keys that no source row has (compared as text: the types differ)."""
    return conn.execute(f"SELECT key::text FROM {backlog} "
                        f"EXCEPT SELECT id::text FROM {schema}.src").fetchall()


@pytest.mark.smoke      # the C trigger's table AM writes, on every major
@pytest.mark.parametrize("key_type, keys, new_type, new_keys", [
    ("text", ["1", "2"], "integer", [3, 70000]),
    ("integer", [1, 2], "bigint", [2 ** 32 + 5, -(2 ** 40)]),     # would wrap to 5 as int4
    ("integer", [1, 2], "text", ["a longer key than eight bytes", "x"]),
    ("bigint", [1, 2], "numeric", [3]),
    ("uuid", [str(uuid.UUID(int=1))], "text", ["not a uuid at all, and long"]),
])
def test_a_changed_key_type_never_crashes_the_server_or_queues_a_wrong_key(
        cluster, conn, owner, model_server, key_type, keys, new_type, new_keys):
    role, user = owner
    _, backlog = pipeline_on(user, model_server, key_type, keys)
    started = postmaster_started(cluster)
    alter = f"ALTER TABLE {role}.src ALTER COLUMN id TYPE {new_type} USING id::{new_type}"
    try:
        user.execute(alter)
    except psycopg.errors.OperationalError:
        raise
    except psycopg.Error as refused:
        # aidb's event trigger refuses the change, clearly. The C trigger must
        # hold without it too (an event trigger a superuser disabled).
        assert "delete_pipeline" in (refused.diag.message_hint or ""), refused
        with aidb_event_triggers_disabled(conn):
            conn.execute(alter)
    for key in new_keys:
        try:
            user.execute("INSERT INTO src VALUES (%s, 'after the change')", (key,))
            user.execute("UPDATE src SET body = 'changed' WHERE id = %s", (key,))
        except psycopg.errors.ObjectNotInPrerequisiteState as refused:
            assert TYPE_CHANGED in refused.diag.message_primary
            assert new_type in refused.diag.message_detail
            assert "delete_pipeline" in refused.diag.message_hint
    assert postmaster_started(cluster) == started
    assert wrong_keys(conn, backlog, role) == []


# What a hostile owner (under 0.1.0, the backlog's owner), or a careless
# superuser, could do to a backlog; {b} is the backlog, {role} the owner.
TAMPERING = {
    "owner changed": ("ALTER TABLE {b} OWNER TO {role}", "does not belong to a superuser"),
    "trigger added": ("CREATE TRIGGER t BEFORE INSERT ON {b} FOR EACH ROW "
                      "EXECUTE FUNCTION public.aidb_test_noop()", "has triggers or rules"),
    "rule added": ("CREATE RULE r AS ON INSERT TO {b} DO ALSO NOTIFY aidb_test",
                   "has triggers or rules"),
    "row security": ("ALTER TABLE {b} ENABLE ROW LEVEL SECURITY", "row-level security"),
    "forced row security": ("ALTER TABLE {b} FORCE ROW LEVEL SECURITY", "row-level security"),
    "column added": ("ALTER TABLE {b} ADD COLUMN extra integer", COLUMNS),
    "column dropped": ("ALTER TABLE {b} DROP COLUMN queued_at", COLUMNS),
    "dropped and re-added": ("ALTER TABLE {b} DROP COLUMN queued_at; "
                             "ALTER TABLE {b} ADD COLUMN queued_at timestamptz",
                             COLUMNS),
    "key renamed": ("ALTER TABLE {b} RENAME COLUMN key TO k", COLUMNS),
    "queued_at retyped": ("ALTER TABLE {b} ALTER COLUMN queued_at TYPE timestamp",
                          COLUMNS),
    "key retyped": ("ALTER TABLE {b} ALTER COLUMN key TYPE bigint", TYPE_CHANGED),
    "sets retyped": ("ALTER TABLE {b} ALTER COLUMN keys TYPE bigint[]", COLUMNS),
    "sets dropped": ("ALTER TABLE {b} DROP COLUMN keys", COLUMNS),
    "replaced by a view": ("ALTER TABLE {b} RENAME TO moved_away; "
                           "CREATE VIEW {b} AS SELECT 1 AS key, now() AS queued_at",
                           "not a plain table"),
}


@pytest.mark.parametrize("change", sorted(TAMPERING))
def test_a_changed_backlog_is_refused_before_anything_is_written(cluster, conn, owner,
                                                                 model_server, change):
    role, user = owner
    pipeline_id, backlog = pipeline_on(user, model_server, "integer", [1, 2])
    statement, problem = TAMPERING[change]
    statements = statement.format(b=backlog, role=role).split("; ")
    conn.execute("CREATE FUNCTION public.aidb_test_noop() RETURNS trigger "
                 "LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END'")
    # The owner tries first; the backlog is aidb's, so it must be refused.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        user.execute(statements[0])
    # A superuser can still change it: the next write must notice.
    for one in statements:
        conn.execute(one)
    table = "aidb.moved_away" if change == "replaced by a view" else backlog
    before = backlog_rows(conn, table)
    started = postmaster_started(cluster)
    try:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as refused:
            user.execute("INSERT INTO src VALUES (3, 'three')")
    finally:
        if change == "replaced by a view":      # so that delete_pipeline can clean up
            conn.execute(f"DROP VIEW {backlog}; "
                         f"ALTER TABLE {table} RENAME TO _backlog_{pipeline_id}")
    diag = refused.value.diag
    assert (f"aidb pipeline {pipeline_id} cannot capture changes of table \"src\""
            in diag.message_primary)
    assert problem in diag.message_primary, diag.message_primary
    assert NOT_AIDBS in diag.message_primary or TYPE_CHANGED in diag.message_primary
    assert "delete_pipeline" in diag.message_hint
    assert postmaster_started(cluster) == started
    assert backlog_rows(conn, backlog) == before
