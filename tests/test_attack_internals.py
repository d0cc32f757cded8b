"""aidb's own objects, and the server and other users' workers (issue #12).

Non-superuser roles attack what is not theirs: they call aidb's internal
functions directly with another user's pipeline id, alter, drop or grant
the backlog and state tables aidb keeps for their own pipeline, and try to
stop or crash the server and another user's background worker (DROP
DATABASE, pg_terminate_backend, changing the key type of a source under a
running pipeline). Each attempt fails with a clear error and changes
nothing; the victim's worker is the same process afterwards and the
postmaster never restarts.
"""

import asyncio
import os

import psycopg
import pytest
from psycopg import sql

from tests.support.background import wait_drained
from tests.support.common import wait_for
from tests.support.attack import scratch_database, SUPERUSER, drop_roles, make_cast
from tests.support.pipeline_checks import MODEL  # noqa: F401 — puts python/ first on sys.path

import aidb  # noqa: E402

pytestmark = pytest.mark.security

ROWS = 5


def chunk_pipeline(conn, name, source, **options):
    named = [sql.SQL(", {} => {}").format(sql.Identifier(k), sql.Literal(v))
             for k, v in options.items()]
    conn.execute(sql.SQL(
        "SELECT aidb.create_pipeline(name => {}, source => {}, source_data_column => 'body', "
        "step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(200){})").format(
        sql.Literal(name), sql.Literal(source), sql.SQL("").join(named)))


@pytest.fixture(scope="module")
def cast(cluster):
    """The victim's Background pipeline `victims` (its worker running) and the
    attacker's Background pipeline `attackers`, each over five rows."""
    with scratch_database(cluster, "int_", template="aidb_template") as dbname:
        cast = make_cast(cluster, dbname)
        for role, name in ((cast.victim, "victims"), (cast.attacker, "attackers")):
            with cast.session(role) as conn:
                conn.execute(sql.SQL("CREATE TABLE {}.src (id int PRIMARY KEY, body text)")
                             .format(sql.Identifier(role)))
                conn.execute(sql.SQL("INSERT INTO {}.src SELECT n, 'doc ' || n "
                                     "FROM generate_series(1, %s) n").format(sql.Identifier(role)),
                             (ROWS,))
                chunk_pipeline(conn, name, f"{role}.src", auto_processing="Background")
        # Drained first: a worker still embedding the first rows would change
        # the backlog and state that each attack checks were left alone.
        with cast.session(SUPERUSER) as admin:
            for name in ("victims", "attackers"):
                wait_drained(admin, name)
        yield cast
    drop_roles(cluster, cast)


@pytest.fixture
def admin(cast):
    with cast.session(SUPERUSER) as connection:
        yield connection


def pipeline_id(admin, name):
    return admin.execute("SELECT id FROM aidb.pipeline_registry WHERE name = %s",
                         (name,)).fetchone()[0]


def worker_pid(admin, name):
    row = admin.execute('SELECT "worker pid" FROM aidb.pipem WHERE pipeline = %s AND '
                        '"worker state" = %s', (name, "running")).fetchone()
    return row and row[0]


def snapshot(admin, name):
    """What an attack must leave as it was: the pipeline's registry row, its
    aidb objects (with owners, settings and grants), backlog and state."""
    pid = pipeline_id(admin, name)
    registry = admin.execute("SELECT to_jsonb(r) FROM aidb.pipeline_registry r WHERE id = %s",
                             (pid,)).fetchone()
    functions = admin.execute(
        "SELECT f.oid::regprocedure::text, f.prosecdef, f.proowner::regrole::text, f.proconfig, "
        "f.proacl::text FROM pg_proc f WHERE f.pronamespace = 'aidb'::regnamespace "
        "AND f.proname ~ ('^_[a-z_]+_' || %s || '$') ORDER BY 1", (pid,)).fetchall()
    tables = admin.execute(
        "SELECT c.relname, c.relowner::regrole::text, c.relacl::text, "
        "(SELECT array_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod) ORDER BY a.attnum) "
        " FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), "
        "(SELECT count(*) FROM pg_trigger t WHERE t.tgrelid = c.oid), "
        "(SELECT count(*) FROM pg_index i WHERE i.indrelid = c.oid) "
        "FROM pg_class c WHERE c.relnamespace = 'aidb'::regnamespace "
        "AND c.relname IN (%s, %s) ORDER BY 1", (f"_backlog_{pid}", f"_state_{pid}")).fetchall()
    rows = [admin.execute(sql.SQL("SELECT count(*) FROM aidb.{}").format(sql.Identifier(t)))
            .fetchone()[0] for t in (f"_backlog_{pid}", f"_state_{pid}")]
    return registry, functions, tables, rows


# --- internal functions called directly -----------------------------------------------------------

DIRECT_CALLS = [  # (role, statement, error, message)
    ("attacker", "SELECT aidb._install_pipeline_objects({victims})",
     psycopg.errors.InsufficientPrivilege, "permission denied for pipeline"),
    ("attacker", "SELECT aidb._install_pipeline_objects({victims}, true)",
     psycopg.errors.InsufficientPrivilege, "permission denied for pipeline"),
    ("attacker", "SELECT aidb._drop_pipeline_objects({victims})",
     psycopg.errors.InsufficientPrivilege, "permission denied for pipeline"),
    ("attacker", "SELECT aidb._publish_pipeline({victims}, 10, true, 'victims', false)",
     psycopg.errors.InsufficientPrivilege, "permission denied for function"),
    ("attacker", "SELECT aidb._depend_on_extension('pg_class'::regclass, 'aidb._backlog_{victims}'::regclass)",
     psycopg.errors.InsufficientPrivilege, "permission denied for function"),
    ("attacker", "SELECT aidb._add_state_rows('aidb._state_{victims}'::regclass, ARRAY[99])",
     psycopg.errors.InsufficientPrivilege, "permission denied for table"),
    ("attacker", "SELECT aidb._process_live({victims}, ARRAY[1])",
     psycopg.errors.InsufficientPrivilege, "only its capture trigger does"),
    ("attacker", "SELECT aidb._run_batch({victims})",
     psycopg.errors.InsufficientPrivilege, "permission denied"),
    ("attacker", "SELECT aidb._record_worker_error({victims}, 'blocked by the attacker')",
     psycopg.errors.InsufficientPrivilege, "row-level security"),
    ("attacker", "SELECT aidb._embed_query({victims}, 'what')",
     psycopg.errors.InsufficientPrivilege, "permission denied"),
    ("attacker", "SELECT * FROM aidb._source_{victims}(ARRAY[1])",
     psycopg.errors.InsufficientPrivilege, "permission denied for function"),
    ("attacker", "SELECT * FROM aidb._destination_{victims}(ARRAY[1], ARRAY[]::int[], "
                 "ARRAY[]::int[], ARRAY[]::text[], ARRAY[]::bytea[])",
     psycopg.errors.InsufficientPrivilege, "permission denied for function"),
    ("attacker", "SELECT aidb._capture_{victims}()",
     psycopg.errors.InsufficientPrivilege, "permission denied for function"),
    ("attacker", "CREATE TRIGGER steal AFTER INSERT ON {attacker}.src FOR EACH STATEMENT "
                 "EXECUTE FUNCTION aidb._capture_keys('{victims}', 'id', 'body')",
     psycopg.errors.InsufficientPrivilege, "permission denied for function"),
    ("attacker", "INSERT INTO aidb._backlog_{victims} (key) VALUES (1)",
     psycopg.errors.InsufficientPrivilege, "permission denied for table"),
    ("attacker", "TRUNCATE aidb._state_{victims}",
     psycopg.errors.InsufficientPrivilege, "permission denied for table"),
    ("attacker", "SELECT aidb.run_pipeline('victims')",
     psycopg.errors.InsufficientPrivilege, 'permission denied for pipeline "victims"'),
    ("attacker", "SELECT aidb.delete_pipeline('victims')",
     psycopg.errors.InsufficientPrivilege, 'permission denied for pipeline "victims"'),
    ("attacker", "SELECT aidb.update_pipeline('victims', 'Disabled')",
     psycopg.errors.InsufficientPrivilege, 'permission denied for pipeline "victims"'),
    ("attacker", "SELECT aidb.clear_pipeline_errors('victims')",
     psycopg.errors.InsufficientPrivilege, 'permission denied for pipeline "victims"'),
    ("attacker", "SELECT aidb._wake_pipeline({victims}, true)",
     psycopg.errors.InsufficientPrivilege, "permission denied to wake the worker"),
    ("nobody", "SELECT aidb._install_pipeline_objects({victims})",
     psycopg.errors.InsufficientPrivilege, "permission denied for function"),
    ("nobody", "SELECT aidb._wake_pipeline({victims}, true)",
     psycopg.errors.InsufficientPrivilege, "permission denied for function"),
    ("nobody", "SELECT aidb.create_pipeline('mine', 'pg_class')",
     psycopg.errors.InsufficientPrivilege, "aidb_users"),
    ("reader", "SELECT aidb.reconcile_pipeline('victims')",
     psycopg.errors.InsufficientPrivilege, "aidb_users"),
]


@pytest.mark.parametrize("role, statement, error, message", DIRECT_CALLS,
                         ids=[f"{r}: {s[:60]}" for r, s, _, _ in DIRECT_CALLS])
def test_internal_functions_refuse_other_users_pipelines(cast, admin, role, statement, error,
                                                         message):
    before = snapshot(admin, "victims")
    with cast.session(getattr(cast, role)) as session, pytest.raises(error, match=message):
        session.execute(statement.format(victims=pipeline_id(admin, "victims"),
                                         attacker=cast.attacker))
    assert snapshot(admin, "victims") == before


def test_forged_registry_writes_do_not_reach_other_users_pipelines(cast, admin):
    before = snapshot(admin, "victims")
    victims = pipeline_id(admin, "victims")
    admin.execute("INSERT INTO aidb.pipeline_error_log (pipeline_id, step, category, message) "
                  "VALUES (%s, 'test', 'RecordTemporary', 'the victim''s') ON CONFLICT DO NOTHING",
                  (victims,))
    with cast.session(cast.attacker) as attacker:
        for statement in ("UPDATE aidb.pipeline_registry SET batch_size = 1 WHERE name = 'victims'",
                          "DELETE FROM aidb.pipeline_registry WHERE name = 'victims'",
                          "DELETE FROM aidb.pipeline_run_stats WHERE pipeline_id = %(victims)s",
                          "UPDATE aidb.pipeline_error_log SET message = 'x' "
                          "WHERE pipeline_id = %(victims)s"):
            assert attacker.execute(statement, {"victims": victims}).rowcount == 0
        # What aidb built a pipeline's objects from cannot change after creation,
        # not even on the attacker's own row.
        for column, value in (("owner_role", f"{cast.victim}"), ("source_filter", "false"),
                              ("destination", "pg_catalog.pg_class"), ("steps", "[]")):
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="permission denied for table pipeline_registry"):
                attacker.execute(sql.SQL("UPDATE aidb.pipeline_registry SET {} = %s "
                                         "WHERE name = 'attackers'").format(sql.Identifier(column)),
                                 (value,))
    assert snapshot(admin, "victims") == before
    assert admin.execute("SELECT message FROM aidb.pipeline_error_log WHERE pipeline_id = %s",
                         (victims,)).fetchall() == [("the victim's",)]
    admin.execute("DELETE FROM aidb.pipeline_error_log WHERE pipeline_id = %s", (victims,))


def test_an_external_worker_run_by_another_user_serves_nothing_of_the_victims(cast, admin):
    """aidb.Worker connected as the attacker, asked for the victim's
    pipeline: it refuses (a non-zero status) and changes nothing."""
    with cast.session(cast.victim) as victim:
        victim.execute(sql.SQL("INSERT INTO {}.src VALUES (1000, 'queued')")
                       .format(sql.Identifier(cast.victim)))
    before = snapshot(admin, "victims")
    worker = aidb.Worker(cast.dsn(cast.attacker), pipelines=["victims"], once=True)
    status = asyncio.run(worker.run())
    assert status != 0
    assert snapshot(admin, "victims")[:3] == before[:3]


# --- aidb's tables of the attacker's own pipeline ------------------------------------------

OWN_TABLE_ATTACKS = [
    "ALTER TABLE aidb._backlog_{attackers} ADD COLUMN extra int",
    "ALTER TABLE aidb._backlog_{attackers} ALTER COLUMN key TYPE text",
    "ALTER TABLE aidb._state_{attackers} DROP COLUMN hash",
    "ALTER TABLE aidb._backlog_{attackers} OWNER TO {attacker}",
    "ALTER TABLE aidb._backlog_{attackers} RENAME TO mine",
    "DROP TABLE aidb._state_{attackers}",
    "CREATE INDEX ON aidb._backlog_{attackers} (key)",
    "CREATE TRIGGER t BEFORE INSERT ON aidb._backlog_{attackers} FOR EACH ROW "
    "EXECUTE FUNCTION suppress_redundant_updates_trigger()",
    "CREATE RULE r AS ON INSERT TO aidb._backlog_{attackers} DO INSTEAD NOTHING",
    "ALTER TABLE aidb._backlog_{attackers} DISABLE TRIGGER ALL",
    "CREATE POLICY p ON aidb._state_{attackers} USING (false)",
]


def test_the_owner_cannot_pass_on_its_rights_to_aidbs_tables(cast, admin):
    before = snapshot(admin, "attackers")
    with cast.session(cast.attacker) as attacker:
        notices = []
        attacker.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary))
        attacker.execute(sql.SQL("GRANT SELECT ON aidb.{} TO {}").format(
            sql.Identifier(f"_state_{pipeline_id(admin, 'attackers')}"), sql.Identifier(cast.victim)))
    assert any("no privileges were granted" in n for n in notices), notices
    assert snapshot(admin, "attackers") == before


@pytest.mark.parametrize("statement", OWN_TABLE_ATTACKS)
def test_the_owner_cannot_change_aidbs_tables_of_its_pipeline(cast, admin, statement):
    before = snapshot(admin, "attackers")
    with cast.session(cast.attacker) as attacker, \
            pytest.raises(psycopg.errors.InsufficientPrivilege,
                          match="must be owner|permission denied"):
        attacker.execute(statement.format(attackers=pipeline_id(admin, "attackers"),
                                          attacker=cast.attacker, victim=cast.victim))
    assert snapshot(admin, "attackers") == before


# --- stopping other users' workers, crashing the server ------------------------------------------

def postmaster(cluster, admin):
    """(the postmaster's pid, its start time): both change if it restarts,
    or if a backend's crash makes it reinitialise."""
    with open(os.path.join(cluster.datadir, "postmaster.pid")) as pidfile:
        pid = int(pidfile.readline())
    return pid, admin.execute("SELECT pg_postmaster_start_time()").fetchone()[0]


def test_a_non_superuser_cannot_stop_another_users_worker(cluster, cast, admin):
    pid = wait_for(lambda: worker_pid(admin, "victims"), message="the victim's worker")
    launcher = admin.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'aidb launcher'"
                             ).fetchone()[0]
    with cast.session(cast.attacker) as attacker:
        for target in (pid, launcher):
            for call in ("pg_terminate_backend", "pg_cancel_backend"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege,
                                   match="permission denied to (terminate|cancel)|must be a "
                                         "(member of the role whose|superuser to)"):
                    attacker.execute(f"SELECT {call}(%s)", (target,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner"):
            attacker.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(cast.dbname)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            attacker.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(cast.victim)))
    assert worker_pid(admin, "victims") == pid
    assert admin.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'aidb launcher'"
                         ).fetchone()[0] == launcher


KEY_CHANGES = [
    ("ALTER TABLE {t} ALTER COLUMN id TYPE bigint", "INSERT INTO {t} VALUES (100, 'big')"),
    ("ALTER TABLE {t} ALTER COLUMN id TYPE text", "INSERT INTO {t} VALUES ('k101', 'text key')"),
    ("ALTER TABLE {t} ALTER COLUMN id TYPE numeric", "INSERT INTO {t} VALUES (102.5, 'numeric')"),
    ("ALTER TABLE {t} RENAME COLUMN id TO ident", "INSERT INTO {t} VALUES (103, 'renamed')"),
    ("ALTER TABLE {t} DROP COLUMN id", "INSERT INTO {t} (body) VALUES ('no key')"),
]


def test_changing_the_key_under_a_running_pipeline_keeps_the_server_up(cluster, cast, admin):
    """The attacker changes its source's key column under its own running
    pipeline, then writes: each write succeeds or fails with a clear error,
    and no backend crashes (the postmaster would reinitialise)."""
    before = postmaster(cluster, admin)
    victims_worker = wait_for(lambda: worker_pid(admin, "victims"), message="the victim's worker")
    errors = []
    with cast.session(cast.attacker) as attacker:
        for number, (change, write) in enumerate(KEY_CHANGES):
            table = f"{cast.attacker}.src{number}"
            attacker.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
            attacker.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
            chunk_pipeline(attacker, f"k{number}", table, auto_processing="Background",
                           destination=f"{cast.attacker}.k{number}_dest")
            for statement in (change.format(t=table), write.format(t=table),
                              f"SELECT aidb.run_pipeline('k{number}')"):
                try:
                    attacker.execute(statement)
                except psycopg.errors.Error as exc:
                    # A clear error from a live backend, not a lost connection.
                    assert not isinstance(exc, psycopg.OperationalError), exc
                    assert exc.diag.message_primary and "internal error" not in str(exc), exc
                    errors.append(exc.diag.message_primary)
    assert postmaster(cluster, admin) == before
    assert worker_pid(admin, "victims") == victims_worker
    assert admin.execute("SELECT 1").fetchone() == (1,)
