"""Escalation through what a pipeline's owner controls (issue #12).

The attacker, a member of aidb_users, owns pipelines whose view, source_filter,
destination trigger and destination row-security policy call its `spy`
(tests/support/attack.py): code that tries to make the attacker superuser
(ALTER ROLE, SET ROLE, RESET ROLE, set_config('role'), SET SESSION
AUTHORIZATION) and records where it ran. Then a superuser does everything
one does with a user's pipeline — reads aidb.pipem, runs, reconciles,
creates, updates and deletes it, serves it with a background worker and an
external worker (aidb.Worker and `aidb worker`) — and the record must show
that the attacker's code ran, always as the attacker, and that none of its
escalations worked. The attacker's attempts to loosen the SECURITY DEFINER
functions aidb made for it, and registry rows it forges, are refused.
"""

import asyncio
import os
import subprocess
import sys

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from psycopg import sql

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.attack import (scratch_database, 
    SUPERUSER, drop_roles, is_superuser, make_cast, plant_spy, seen_rows, spy_counts)
from tests.support.pipeline_checks import create_fake_model

import aidb

pytestmark = pytest.mark.security

AIDB = os.path.join(os.path.dirname(sys.executable), "aidb")   # the venv's console script


@pytest.fixture(scope="module")
def cast(cluster):
    """One database for the module: the roles, the attacker's spy, its
    source table `src` (ten rows) and its view `v`, which calls the spy."""
    with scratch_database(cluster, "atk_", template="aidb_template") as dbname:
        cast = make_cast(cluster, dbname)
        with cast.session(cast.attacker) as attacker:
            plant_spy(attacker, cast.attacker)
            a = sql.Identifier(cast.attacker)
            attacker.execute(sql.SQL("CREATE TABLE {}.src (id int PRIMARY KEY, body text)").format(a))
            attacker.execute(sql.SQL("INSERT INTO {}.src SELECT n, 'document ' || n "
                                     "FROM generate_series(1, 10) n").format(a))
            attacker.execute(sql.SQL("CREATE VIEW {0}.v AS SELECT id, body FROM {0}.src "
                                     "WHERE {0}.spy('view')").format(a))
            attacker.execute(sql.SQL("""
                CREATE FUNCTION {0}.spy_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN PERFORM {0}.spy('destination trigger'); RETURN coalesce(NEW, OLD); END $$
                """).format(a))
        yield cast
    drop_roles(cluster, cast)


@pytest.fixture
def admin(cast):
    with cast.session(SUPERUSER) as connection:
        seen_rows(connection, cast.attacker)          # a clean record for each test
        spy_counts(connection, cast.attacker)
        yield connection


@pytest.fixture
def attacker(cast):
    with cast.session(cast.attacker) as connection:
        yield connection


_names = iter(range(1, 1_000_000))


def pipeline_name():
    return f"p{next(_names)}"


def create_chunk_pipeline(conn, name, source, **options):
    """A ChunkText pipeline (no model needed) created over `conn`."""
    named = [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Literal(v))
             for k, v in options.items()]
    conn.execute(sql.SQL(
        "SELECT aidb.create_pipeline(name => {}, source => {}, source_key_column => 'id', "
        "source_data_column => 'body', step_1 => 'ChunkText', "
        "step_1_options => aidb.chunk_text_config(200){})").format(
        sql.Literal(name), sql.Literal(source),
        sql.SQL("").join(sql.SQL(", ") + n for n in named)))


def arm_destination(attacker_conn, cast, name):
    """The pipeline's destination gets the attacker's row trigger and a
    forced row-security policy that both call the spy, and anyone may read it."""
    destination = attacker_conn.execute("SELECT destination FROM aidb.pipelines WHERE name = %s",
                                        (name,)).fetchone()[0]
    d, a = sql.SQL(destination), sql.Identifier(cast.attacker)
    for statement in (
            "CREATE TRIGGER spy BEFORE INSERT OR DELETE ON {d} FOR EACH ROW "
            "EXECUTE FUNCTION {a}.spy_trigger()",
            "ALTER TABLE {d} ENABLE ROW LEVEL SECURITY",
            "ALTER TABLE {d} FORCE ROW LEVEL SECURITY",
            "CREATE POLICY spy ON {d} USING ({a}.spy('destination policy')) "
            "WITH CHECK ({a}.spy('destination policy'))",
            "GRANT SELECT ON {d} TO PUBLIC"):
        attacker_conn.execute(sql.SQL(statement).format(d=d, a=a))


def hostile_pipelines(cast, attacker_conn):
    """A view pipeline and a table pipeline with the spy as source_filter and
    an armed destination, both Disabled with all ten keys pending."""
    view, table = pipeline_name(), pipeline_name()
    create_chunk_pipeline(attacker_conn, view, f"{cast.attacker}.v")
    create_chunk_pipeline(attacker_conn, table, f"{cast.attacker}.src",
                          source_filter=f"{cast.attacker}.spy('filter')",
                          destination=f"{cast.attacker}.{table}_dest")
    arm_destination(attacker_conn, cast, table)
    return view, table


def forget(admin, cast):
    """Start the spy's record afresh."""
    seen_rows(admin, cast.attacker)
    spy_counts(admin, cast.attacker)


def assert_ran_only_as_attacker(admin, cast, expected_tags, session_role=None):
    """The spy ran (at least once for each tag in `expected_tags`), every
    time as the attacker, no escalation worked, and the attacker is no superuser."""
    rows = seen_rows(admin, cast.attacker)
    ran, ran_wrongly = spy_counts(admin, cast.attacker)
    assert ran_wrongly == 0, f"the spy ran {ran_wrongly} times with other rights: {rows}"
    assert ran >= len(rows)
    assert {row[0] for row in rows} >= set(expected_tags), f"the spy did not run: {rows}"
    for tag, current, session, superuser, escalated in rows:
        assert (current, superuser, escalated) == (cast.attacker, False, []), \
            f"{tag}: ran as {current} (session {session}), superuser {superuser}, got {escalated}"
        if session_role:
            assert session == session_role
    assert not is_superuser(admin, cast.attacker)
    return rows


def destination_keys(admin, name):
    destination = admin.execute("SELECT destination FROM aidb.pipelines WHERE name = %s",
                                (name,)).fetchone()[0]
    return {k for (k,) in admin.execute(sql.SQL("SELECT DISTINCT source_key FROM {}")
                                        .format(sql.SQL(destination)))}


# --- a superuser acting on the attacker's pipelines ------------------------------------------

def test_a_superuser_reading_pipem_runs_the_owners_view_as_the_owner(cast, admin, attacker):
    view, table = hostile_pipelines(cast, attacker)
    forget(admin, cast)
    counts = dict(admin.execute('SELECT pipeline, "count(source records)" FROM aidb.pipem '
                                "WHERE pipeline IN (%s, %s)", (view, table)).fetchall())
    assert counts == {view: 10, table: 10}
    assert_ran_only_as_attacker(admin, cast, {"view", "filter"}, session_role=SUPERUSER)


def test_a_superuser_running_and_reconciling_runs_owner_code_as_the_owner(cast, admin, attacker):
    view, table = hostile_pipelines(cast, attacker)
    forget(admin, cast)
    for name in (view, table):
        admin.execute("SELECT aidb.run_pipeline(%s)", (name,))
    # (The filter runs where a batch reads the source, in a savepoint rolled
    # back at once: the spy's counter sees it, its table does not.)
    assert_ran_only_as_attacker(admin, cast, {"view", "destination trigger",
                                              "destination policy"}, session_role=SUPERUSER)
    assert destination_keys(admin, view) == set(range(1, 11))
    assert destination_keys(admin, table) == set(range(1, 11))
    attacker.execute(sql.SQL("UPDATE {}.src SET body = body || '!' WHERE id = 3")
                     .format(sql.Identifier(cast.attacker)))
    for name in (view, table):
        admin.execute("SELECT aidb.reconcile_pipeline(%s)", (name,))
        admin.execute("SELECT aidb.run_pipeline(%s)", (name,))
    assert_ran_only_as_attacker(admin, cast, {"view", "filter", "destination trigger"},
                                session_role=SUPERUSER)


def test_a_superuser_creating_updating_deleting_live_pipelines_lends_no_rights(cast, admin,
                                                                              attacker):
    # A view cannot be Live (it has no triggers): refused before any of the
    # attacker's code runs. Created Live over the attacker's table, the
    # initial drain runs its filter, as the attacker.
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        create_chunk_pipeline(admin, pipeline_name(), f"{cast.attacker}.v",
                              owner_role=cast.attacker, auto_processing="Live")
    assert_ran_only_as_attacker(admin, cast, set())
    created = pipeline_name()
    create_chunk_pipeline(admin, created, f"{cast.attacker}.src", owner_role=cast.attacker,
                          auto_processing="Live", source_filter=f"{cast.attacker}.spy('filter')",
                          destination=f"{cast.attacker}.{created}_dest")
    assert destination_keys(admin, created) == set(range(1, 11))
    # (The filter ran in a savepoint rolled back at once: only its counter says so.)
    assert spy_counts(admin, cast.attacker, clear=False)[0] > 0
    assert_ran_only_as_attacker(admin, cast, set(), session_role=SUPERUSER)
    # The superuser's write on the Live source runs the owner's destination trigger as the owner.
    arm_destination(attacker, cast, created)
    forget(admin, cast)
    admin.execute(sql.SQL("UPDATE {}.src SET body = body || '?' WHERE id = 4")
                  .format(sql.Identifier(cast.attacker)))
    assert_ran_only_as_attacker(admin, cast, {"destination trigger"}, session_role=SUPERUSER)
    _, table = hostile_pipelines(cast, attacker)
    forget(admin, cast)
    admin.execute("SELECT aidb.update_pipeline(%s, 'Live')", (table,))
    assert destination_keys(admin, table) == set(range(1, 11))
    assert_ran_only_as_attacker(admin, cast, {"destination trigger"}, session_role=SUPERUSER)
    for name in (created, table):
        admin.execute("SELECT aidb.delete_pipeline(%s, drop_destination => true)", (name,))
    assert_ran_only_as_attacker(admin, cast, set())
    assert admin.execute("SELECT count(*) FROM aidb.pipelines WHERE name IN (%s, %s)",
                         (created, table)).fetchone() == (0,)


def test_a_superuser_creating_a_pipeline_plans_nothing_of_the_owners_as_itself(cast, admin,
                                                                             attacker):
    """IMMUTABLE functions run when a query that calls them with constants is
    planned: in a view, or in a source_filter the superuser passes."""
    a = sql.Identifier(cast.attacker)
    attacker.execute(sql.SQL("CREATE VIEW {0}.planned AS SELECT id, body FROM {0}.src "
                             "WHERE {0}.spy_planned()").format(a))
    forget(admin, cast)
    view, table = pipeline_name(), pipeline_name()
    create_chunk_pipeline(admin, view, f"{cast.attacker}.planned", owner_role=cast.attacker,
                          destination=f"{cast.attacker}.{view}_dest")
    create_chunk_pipeline(admin, table, f"{cast.attacker}.src", owner_role=cast.attacker,
                          source_filter=f"{cast.attacker}.spy_planned()",
                          destination=f"{cast.attacker}.{table}_dest")
    ran, ran_wrongly = spy_counts(admin, cast.attacker)
    assert ran > 0 and ran_wrongly == 0
    for name in (view, table):
        admin.execute("SELECT aidb.run_pipeline(%s)", (name,))
        assert destination_keys(admin, name) == set(range(1, 11))
    assert spy_counts(admin, cast.attacker)[1] == 0
    # What create_pipeline checks as the owner, it still refuses clearly.
    attacker.execute(sql.SQL("CREATE VIEW {0}.twice AS SELECT id, body FROM {0}.src "
                             "UNION ALL SELECT 1, 'again'").format(a))
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='key column "id" .* is not unique'):
        create_chunk_pipeline(admin, pipeline_name(), f"{cast.attacker}.twice",
                              owner_role=cast.attacker)
    with pytest.raises(psycopg.errors.UndefinedColumn, match='"no_such_column" does not exist'):
        create_chunk_pipeline(admin, pipeline_name(), f"{cast.attacker}.src",
                              owner_role=cast.attacker, source_filter="no_such_column > 1")


def test_a_background_worker_runs_the_owners_code_as_the_owner(cast, admin):
    """The worker logs in as the owner; its view reconciliations (each
    second here, once the backfill is done) run the view as the owner."""
    name = pipeline_name()
    create_chunk_pipeline(admin, name, f"{cast.attacker}.v", owner_role=cast.attacker,
                          auto_processing="Background", background_sync_interval="1 second")
    try:
        wait_for(lambda: destination_keys(admin, name) == set(range(1, 11)),
                 message="the background worker's backfill")
        wait_for(lambda: cast.attacker in {session for _, _, session, _, _
                                           in seen_rows(admin, cast.attacker, clear=False)},
                 message="the worker's reconciliation of the view")
        assert_ran_only_as_attacker(admin, cast, {"view"})
    finally:
        admin.execute("SELECT aidb.delete_pipeline(%s)", (name,))


def test_external_workers_run_by_a_superuser_run_owner_code_as_the_owner(cast, admin, attacker):
    view, table = hostile_pipelines(cast, attacker)
    forget(admin, cast)
    worker = aidb.Worker(cast.dsn(SUPERUSER), pipelines=[view], once=True)
    assert asyncio.run(worker.run()) == 0
    assert destination_keys(admin, view) == set(range(1, 11))
    result = subprocess.run([AIDB, "worker", "-d", cast.dsn(SUPERUSER), "-i", table, "--once"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert destination_keys(admin, table) == set(range(1, 11))
    assert_ran_only_as_attacker(admin, cast, {"view", "destination trigger", "destination policy"},
                                session_role=SUPERUSER)


# --- another user writing to a table the attacker's pipeline follows ---------------------------

@pytest.mark.parametrize("mode", ["Live", "Disabled"])
def test_writers_of_a_followed_table_lend_the_pipeline_no_rights(cast, admin, attacker, mode):
    """The victim lets the attacker follow its table (SELECT, TRIGGER); the
    victim's own writes then run the attacker's filter and destination code
    (Live: in the victim's transaction), as the attacker only."""
    table = f"{cast.victim}.followed_{mode.lower()}"
    with cast.session(cast.victim) as victim:
        victim.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text)")
        victim.execute(f"GRANT USAGE ON SCHEMA {cast.victim} TO {cast.attacker}")
        victim.execute(f"GRANT SELECT, TRIGGER ON {table} TO {cast.attacker}")
        name = pipeline_name()
        create_chunk_pipeline(attacker, name, table, auto_processing=mode,
                              source_filter=f"{cast.attacker}.spy('filter')",
                              destination=f"{cast.attacker}.{name}_dest")
        arm_destination(attacker, cast, name)
        forget(admin, cast)
        victim.execute(f"INSERT INTO {table} VALUES (1, 'one'), (2, 'two')")
        victim.execute(f"UPDATE {table} SET body = 'uno' WHERE id = 1")
        victim.execute(f"DELETE FROM {table} WHERE id = 2")
    if mode == "Disabled":
        attacker.execute("SELECT aidb.run_pipeline(%s)", (name,))
    assert destination_keys(admin, name) == {1}
    rows = assert_ran_only_as_attacker(admin, cast, {"destination trigger"})
    if mode == "Live":
        assert cast.victim in {session for _, _, session, _, _ in rows}


# --- another aidb user reading the monitoring view ---------------------------------------------

def test_pipem_never_runs_a_destination_policy_as_the_reader(cast, admin, attacker):
    _, table = hostile_pipelines(cast, attacker)
    attacker.execute("SELECT aidb.run_pipeline(%s)", (table,))
    forget(admin, cast)
    for role in (cast.victim, cast.reader):
        with cast.session(role) as reader:
            row = reader.execute('SELECT "count(source records)", "count(destination records)" '
                                 "FROM aidb.pipem WHERE pipeline = %s", (table,)).fetchone()
            # The source is the attacker's (counted by its function, if the
            # reader may read it); the policy is the attacker's SQL: no count.
            assert row == (None, None)
    assert seen_rows(admin, cast.attacker) == []
    assert spy_counts(admin, cast.attacker) == (0, 0)


def test_a_destination_turned_into_a_view_is_never_read_by_a_superuser(cast, admin, attacker,
                                                                       model_server):
    """PostgreSQL 15 still turns an empty table into a view (CREATE RULE
    "_RETURN"), keeping its oid: the destination's functions would then run
    as whoever reads it. Retrieval and aidb.pipem refuse to read it."""
    if admin.info.server_version >= 160000:
        pytest.skip("PostgreSQL 16 no longer turns tables into views")
    model = f"{cast.attacker}_model"
    if not admin.execute("SELECT 1 FROM aidb.models WHERE name = %s", (model,)).fetchone():
        create_fake_model(attacker, model_server.url, TEST_API_KEY, name=model)
    name = pipeline_name()
    destination = f"{cast.attacker}.{name}_dest"
    attacker.execute("SELECT aidb.create_pipeline(name => %s, source => %s, source_data_column "
                     "=> 'body', step_1 => 'KnowledgeBase', step_1_options => "
                     "aidb.knowledge_base_config(%s), destination => %s)",
                     (name, f"{cast.attacker}.src", model, destination))
    for index in attacker.execute("SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass",
                                  (destination,)).fetchall():
        attacker.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
            sql.SQL(destination), sql.Identifier(index[0])))
    attacker.execute(sql.SQL("VACUUM {}").format(sql.SQL(destination)))
    attacker.execute(sql.SQL(
        "CREATE RULE \"_RETURN\" AS ON SELECT TO {d} DO INSTEAD SELECT 1 AS source_key, "
        "0 AS part_id, 'x'::text AS value, NULL::vector(8) AS embedding, now() AS updated_at "
        "WHERE {a}.spy('destination view')").format(d=sql.SQL(destination),
                                                    a=sql.Identifier(cast.attacker)))
    assert admin.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass",
                         (destination,)).fetchone() == ("v",)
    forget(admin, cast)
    with pytest.raises(psycopg.errors.Error, match="no longer a table but a view"):
        admin.execute("SELECT * FROM aidb.retrieve_text(%s, 'hello', 1)", (name,))
    assert admin.execute('SELECT "count(destination records)" FROM aidb.pipem WHERE pipeline = %s',
                         (name,)).fetchone() == (None,)
    assert spy_counts(admin, cast.attacker) == (0, 0)
    admin.execute("SELECT aidb.delete_pipeline(%s)", (name,))


# --- the owner's definer functions stay as aidb made them ----------------------------------

def owner_functions(admin, name):
    """{function: (security definer, owner, settings)} of a pipeline's owner functions."""
    return {f: (d, o, c) for f, d, o, c in admin.execute("""
        SELECT f.oid::regprocedure::text, f.prosecdef, f.proowner::regrole::text, f.proconfig
        FROM pg_proc f JOIN aidb.pipeline_registry p ON f.proname ~ ('^_[a-z_]+_' || p.id || '$')
        WHERE f.pronamespace = 'aidb'::regnamespace AND p.name = %s""", (name,))}


TAMPERING = [
    "ALTER FUNCTION {count} SECURITY INVOKER",
    "ALTER ROUTINE {source} SECURITY INVOKER",
    "ALTER FUNCTION {source} SET search_path = public, pg_catalog",
    "ALTER FUNCTION {drift} RESET search_path",
    "ALTER FUNCTION {count} SET role = postgres",
    "COMMENT ON FUNCTION {source} IS 'mine'",
    "GRANT EXECUTE ON FUNCTION {source} TO {victim}",
    "GRANT EXECUTE ON FUNCTION {count} TO {victim} WITH GRANT OPTION",
    "DROP FUNCTION {all_keys}",
    "DROP FUNCTION {capture} CASCADE",
    "DROP OWNED BY {attacker} CASCADE",
]


@pytest.fixture(scope="module")
def tampered(cast):
    """One armed table pipeline of the attacker's (each attempt is refused, so
    it stays as it was)."""
    with cast.session(cast.attacker) as attacker:
        return hostile_pipelines(cast, attacker)[1]


@pytest.mark.parametrize("statement", TAMPERING)
def test_the_owner_cannot_loosen_the_functions_aidb_made_for_it(cast, admin, attacker, tampered,
                                                               statement):
    table = tampered
    before = owner_functions(admin, table)
    names = {f.split("(")[0].split("._")[1].rsplit("_", 1)[0]: f for f in before}
    assert set(names) == {"source", "drift", "count", "all_keys", "destination", "capture"}
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match="reserved to superusers") as refused:
        attacker.execute(statement.format(**names, attacker=cast.attacker, victim=cast.victim))
    assert refused.value.diag.message_hint
    assert owner_functions(admin, table) == before


def test_tampering_event_triggers_cannot_see_stops_the_engine(cast, admin, attacker):
    """Defence in depth: were an owner function loosened anyway (here by a
    superuser), the engine and pipem refuse to call it, with a clear error."""
    view, table = hostile_pipelines(cast, attacker)
    pipeline_id = admin.execute("SELECT id FROM aidb.pipeline_registry WHERE name = %s",
                                (view,)).fetchone()[0]
    admin.execute(f"ALTER FUNCTION aidb._count_{pipeline_id}() SECURITY INVOKER")
    admin.execute(f"ALTER FUNCTION aidb._source_{pipeline_id}(integer[]) "
                  "SET search_path = public, pg_catalog")
    forget(admin, cast)
    assert admin.execute('SELECT "count(source records)" FROM aidb.pipem WHERE pipeline = %s',
                         (view,)).fetchone() == (None,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="is not SECURITY DEFINER"):
        admin.execute("SELECT aidb.reconcile_pipeline(%s)", (view,))
    admin.execute("SELECT aidb.run_pipeline(%s)", (view,))    # a WARNING; the error is recorded
    assert admin.execute("SELECT category, message FROM aidb.pipeline_errors WHERE pipeline = %s",
                         (view,)).fetchall() == [
        ("PipelinePermanent", f'pipeline "{view}" will not run: its function '
                              f"aidb._count_{pipeline_id}() is not SECURITY DEFINER")]
    assert seen_rows(admin, cast.attacker) == []
    assert spy_counts(admin, cast.attacker) == (0, 0)
    assert destination_keys(admin, view) == set()
    # Rebuilt by the installer, it runs again (as the attacker).
    admin.execute("SELECT aidb._install_pipeline_objects(%s)", (pipeline_id,))
    admin.execute("SELECT aidb.retry_pipeline_errors(%s)", (view,))
    admin.execute("SELECT aidb.run_pipeline(%s)", (view,))
    assert destination_keys(admin, view) == set(range(1, 11))
    assert_ran_only_as_attacker(admin, cast, {"view"}, session_role=SUPERUSER)


# --- forged registry rows ----------------------------------------------------------------------

def test_a_forged_destination_is_not_dropped_by_a_superusers_delete(cast, admin, attacker):
    with cast.session(cast.victim) as victim:
        victim.execute(f"CREATE TABLE {cast.victim}.precious (source_key int, part_id int, "
                       "value text)")
        victim.execute(f"INSERT INTO {cast.victim}.precious VALUES (1, 0, 'keep me')")
        precious = victim.execute(f"SELECT '{cast.victim}.precious'::regclass::oid").fetchone()[0]
    name = pipeline_name()
    create_chunk_pipeline(attacker, name, f"{cast.attacker}.src")
    forge = ("UPDATE aidb.pipeline_registry SET destination = %s::oid::regclass "
             "WHERE name = %s", (precious, name))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        attacker.execute(*forge)
    admin.execute(*forge)   # the row as a forgery would leave it: the next line of defence
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match=f"belongs to role {cast.victim}.*it is not dropped"):
        admin.execute("SELECT aidb.delete_pipeline(%s, drop_destination => true)", (name,))
    assert admin.execute(f"SELECT value FROM {cast.victim}.precious").fetchall() == [("keep me",)]
    admin.execute("SELECT aidb.delete_pipeline(%s)", (name,))


def test_a_forged_model_never_spends_another_users_credentials(cast, admin, attacker,
                                                               model_server):
    with cast.session(cast.victim) as victim:
        create_fake_model(victim, model_server.url, TEST_API_KEY, name=f"{cast.victim}_model")
    name = pipeline_name()
    create_chunk_pipeline(attacker, name, f"{cast.attacker}.src")
    steps = ('[{"operation": "KnowledgeBase", "options": {"model": "%s", "data_format": "Text", '
             '"distance_operator": "L2"}}]' % f"{cast.victim}_model")
    forge = ("UPDATE aidb.pipeline_registry SET steps = %s::jsonb WHERE name = %s", (steps, name))
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        attacker.execute(*forge)
    admin.execute(*forge)   # the row as a forgery would leave it: the next line of defence
    sent = model_server.state()["requests_total"]
    admin.execute("SELECT aidb.run_pipeline(%s)", (name,))
    assert model_server.state()["requests_total"] == sent
    [(message,)] = admin.execute("SELECT message FROM aidb.pipeline_errors WHERE pipeline = %s",
                                 (name,)).fetchall()
    assert f'model "{cast.victim}_model" has credentials of role {cast.victim}' in message
    admin.execute("SELECT aidb.delete_pipeline(%s)", (name,))
    # Nor can a superuser create a pipeline for the attacker on the victim's model.
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match=f"has credentials of role {cast.victim}"):
        admin.execute("SELECT aidb.create_pipeline(name => %s, source => %s, source_data_column "
                      "=> 'body', step_1 => 'KnowledgeBase', step_1_options => "
                      "aidb.knowledge_base_config(%s), owner_role => %s, destination => %s)",
                      (pipeline_name(), f"{cast.attacker}.src", f"{cast.victim}_model",
                       cast.attacker, f"{cast.attacker}.forged_dest"))
    assert model_server.state()["requests_total"] == sent


# --- injection through source_filter ------------------------------------------------------------

INJECTIONS = [
    "true); ALTER ROLE {a} SUPERUSER; SELECT (true",
    "true); SELECT {a}.spy('injected'), 'x'::text WHERE (true",
    "true\n); SELECT {a}.spy('injected') --",
    "$$ || {a}.spy('injected') || $$",
    "true' || {a}.spy('injected')::text || '",
    "true */ OR {a}.spy('injected') /*",
    "{a}.spy('injected') %s %L %I {{x}}",
    "(SELECT {a}.spy('injected') FROM pg_catalog.pg_sleep(0))",
]


@pytest.mark.parametrize("injection", INJECTIONS)
@pytest.mark.parametrize("creator", ["attacker", "superuser"])
def test_a_hostile_source_filter_runs_only_as_the_owner(cast, admin, attacker, injection,
                                                       creator):
    """A filter written to break out of where aidb puts it: refused, or run
    as the owner only, whoever created the pipeline and whoever runs it."""
    name = pipeline_name()
    source_filter = injection.format(a=cast.attacker)
    creating = attacker if creator == "attacker" else admin
    owner = {} if creator == "attacker" else {"owner_role": cast.attacker}
    try:
        create_chunk_pipeline(creating, name, f"{cast.attacker}.src", source_filter=source_filter,
                              destination=f"{cast.attacker}.{name}_dest", **owner)
    except psycopg.errors.Error as refused:
        assert not isinstance(refused, psycopg.OperationalError)
        assert refused.diag.message_primary
    else:
        for statement in ("SELECT aidb.run_pipeline(%s)", "SELECT aidb.reconcile_pipeline(%s)"):
            admin.execute(statement, (name,))
        admin.execute("SELECT * FROM aidb.pipem")
        admin.execute("SELECT aidb.delete_pipeline(%s, drop_destination => true)", (name,))
    assert_ran_only_as_attacker(admin, cast, set())


# --- odd names -------------------------------------------------------------------------------

odd_identifier = st.lists(
    st.sampled_from(list('aZ_ "%$.;{}()-\'\\é') + ["%s", "{x}", "--", "/*", "$$", "%%"]),
    min_size=1, max_size=10).map("".join)


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(schema=odd_identifier, table=odd_identifier, column=odd_identifier)
def test_odd_names_change_nothing_about_whose_rights_run(cast, admin, attacker, schema, table,
                                                        column):
    """The attacker's schema, source and key column named with quotes,
    percent signs, braces, comment and dollar-quote markers: created and
    run by a superuser, the pipeline reads the view as the attacker only."""
    s = sql.Identifier("a" + schema)
    admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
        s, sql.Identifier(cast.attacker)))
    try:
        attacker.execute(sql.SQL("CREATE VIEW {s}.{t} AS SELECT id AS {c}, body FROM {a}.src "
                                 "WHERE {a}.spy('odd view')").format(
            s=s, t=sql.Identifier(table), c=sql.Identifier(column), a=sql.Identifier(cast.attacker)))
        attacker.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(s))
        source = sql.SQL("{}.{}").format(s, sql.Identifier(table)).as_string(attacker)
        name = pipeline_name()
        admin.execute(sql.SQL(
            "SELECT aidb.create_pipeline(name => %s, source => %s, source_key_column => %s, "
            "source_data_column => 'body', destination => %s, step_1 => 'ChunkText', "
            "step_1_options => aidb.chunk_text_config(200), owner_role => %s)"),
            (name, source, column, f"{cast.attacker}.{name}_dest", cast.attacker))
        admin.execute("SELECT aidb.run_pipeline(%s)", (name,))
        assert destination_keys(admin, name) == set(range(1, 11))
        assert_ran_only_as_attacker(admin, cast, {"odd view"})
        admin.execute("SELECT aidb.delete_pipeline(%s, drop_destination => true)", (name,))
    finally:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(s))
