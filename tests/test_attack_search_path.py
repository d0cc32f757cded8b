"""search_path hijacks of every entry point (issue #12).

The attacker plants, in `public` (writable by everyone here, as before
PostgreSQL 15) and in its own schema, objects that stand in for the ones
engine SQL names: operators (= for integer, bigint, text, uuid and tid, <>,
>, ||, and pgvector's <-> in its own schema), functions (unnest, md5, now,
format, quote_ident, set_config, current_setting, to_regclass, parse_ident,
lower, length, array_length, clock_timestamp, and the aggregate count(*)),
and domains named like the built-in types (text, int4, int8, uuid, bytea,
jsonb, regclass, regrole, tid, timestamptz). Each one records that it ran in
public.hijacked and otherwise behaves like the original.

The victim's sessions, its background worker, and a superuser's sessions put
those schemas first ('public, pg_catalog'; the superuser '<attacker>, public,
pg_catalog'), then use every entry point: create_pipeline (table, text key,
view, Live, Background), Live writes, the background worker, run_pipeline,
reconcile_pipeline, aidb.pipem, pipeline_errors, retry/clear, the external
worker (aidb.Worker), retrieve_key / retrieve_text, encode_text(_batch),
update_pipeline and delete_pipeline. Nothing planted may run. A probe first
shows that the planted objects do win for an ordinary query on that path.
"""

import asyncio

import psycopg
import pytest
from psycopg import sql

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.attack import scratch_database, SUPERUSER, drop_roles, make_cast
from tests.support.pipeline_checks import MODEL, create_fake_model

import aidb

pytestmark = pytest.mark.security

OPERATORS = [  # (name, left, right, returns, the built-in function it wraps)
    ("=", "pg_catalog.int4", "pg_catalog.int4", "boolean", "pg_catalog.int4eq"),
    ("=", "pg_catalog.int8", "pg_catalog.int8", "boolean", "pg_catalog.int8eq"),
    ("=", "pg_catalog.text", "pg_catalog.text", "boolean", "pg_catalog.texteq"),
    ("=", "pg_catalog.uuid", "pg_catalog.uuid", "boolean", "pg_catalog.uuid_eq"),
    ("=", "pg_catalog.tid", "pg_catalog.tid", "boolean", "pg_catalog.tideq"),
    (">", "pg_catalog.tid", "pg_catalog.tid", "boolean", "pg_catalog.tidgt"),
    ("<>", "pg_catalog.int4", "pg_catalog.int4", "boolean", "pg_catalog.int4ne"),
    ("||", "pg_catalog.text", "pg_catalog.text", "pg_catalog.text", "pg_catalog.textcat"),
]
FUNCTIONS = [  # (name, arguments, returns, body's expression over the arguments)
    ("md5", "a pg_catalog.text", "pg_catalog.text", "pg_catalog.md5(a)"),
    ("now", "", "pg_catalog.timestamptz", "pg_catalog.now()"),
    ("clock_timestamp", "", "pg_catalog.timestamptz", "pg_catalog.clock_timestamp()"),
    ("format", "a pg_catalog.text", "pg_catalog.text", "pg_catalog.format(a)"),
    ("quote_ident", "a pg_catalog.text", "pg_catalog.text", "pg_catalog.quote_ident(a)"),
    ("set_config", "a pg_catalog.text, b pg_catalog.text, c boolean", "pg_catalog.text",
     "pg_catalog.set_config(a, b, c)"),
    ("current_setting", "a pg_catalog.text", "pg_catalog.text", "pg_catalog.current_setting(a)"),
    ("to_regclass", "a pg_catalog.text", "pg_catalog.regclass", "pg_catalog.to_regclass(a)"),
    ("parse_ident", "a pg_catalog.text, b boolean DEFAULT true", "pg_catalog.text[]",
     "pg_catalog.parse_ident(a, b)"),
    ("lower", "a pg_catalog.text", "pg_catalog.text", "pg_catalog.lower(a)"),
    ("length", "a pg_catalog.text", "pg_catalog.int4", "pg_catalog.length(a)"),
    ("array_length", "a anyarray, b pg_catalog.int4", "pg_catalog.int4",
     "pg_catalog.array_length(a, b)"),
]
DOMAINS = ["text", "int4", "int8", "uuid", "bytea", "jsonb", "regclass", "regrole", "tid",
           "timestamptz"]


def plant(conn, schema):
    """Every stand-in, in `schema`, recording into public.hijacked."""
    s = sql.Identifier(schema)

    def run(statement, **names):
        conn.execute(sql.SQL(statement).format(s=s, **names))

    def note(what):
        return sql.SQL("PERFORM public.hijack_note({});").format(sql.Literal(f"{schema}.{what}"))

    for number, (op, left, right, returns, builtin) in enumerate(OPERATORS):
        function = sql.Identifier(f"hijack_op_{number}")
        run("CREATE FUNCTION {s}.{f}(a {l}, b {r}) RETURNS {ret} LANGUAGE plpgsql AS $$ "
            "BEGIN {note} RETURN {builtin}(a, b); END $$",
            f=function, l=sql.SQL(left), r=sql.SQL(right), ret=sql.SQL(returns),
            note=note(f"{op}({left},{right})"), builtin=sql.SQL(builtin))
        run("CREATE OPERATOR {s}." + op + " (LEFTARG = {l}, RIGHTARG = {r}, FUNCTION = {s}.{f})",
            f=function, l=sql.SQL(left), r=sql.SQL(right))
    for name, arguments, returns, expression in FUNCTIONS:
        run("CREATE FUNCTION {s}.{name}({args}) RETURNS {ret} LANGUAGE plpgsql AS $$ "
            "BEGIN {note} RETURN {expr}; END $$",
            name=sql.Identifier(name), args=sql.SQL(arguments), ret=sql.SQL(returns),
            note=note(name), expr=sql.SQL(expression))
    run("CREATE FUNCTION {s}.unnest(a anyarray) RETURNS SETOF anyelement LANGUAGE plpgsql AS $$ "
        "BEGIN {note} RETURN QUERY SELECT pg_catalog.unnest(a); END $$", note=note("unnest"))
    run("CREATE FUNCTION {s}.hijack_count(c pg_catalog.int8) RETURNS pg_catalog.int8 "
        "LANGUAGE plpgsql AS $$ BEGIN {note} RETURN c OPERATOR(pg_catalog.+) 1; END $$",
        note=note("count(*)"))
    run("CREATE AGGREGATE {s}.count(*) (SFUNC = {s}.hijack_count, STYPE = pg_catalog.int8, "
        "INITCOND = '0')")
    for number, domain in enumerate(DOMAINS):
        check = sql.Identifier(f"hijack_check_{number}")
        run("CREATE FUNCTION {s}.{c}() RETURNS boolean LANGUAGE plpgsql AS $$ "
            "BEGIN {note} RETURN true; END $$", c=check, note=note(f"domain {domain}"))
        run("CREATE DOMAIN {s}.{d} AS pg_catalog.{d} CHECK ({s}.{c}())",
            d=sql.Identifier(domain), c=check)
    run("GRANT USAGE ON SCHEMA {s} TO PUBLIC")
    run("GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO PUBLIC")


def plant_vector_distance(conn, schema):
    """pgvector's <-> for the attacker's own schema (pgvector lives in public)."""
    s = sql.Identifier(schema)
    conn.execute(sql.SQL(
        "CREATE FUNCTION {s}.hijack_l2(a public.vector, b public.vector) RETURNS float8 "
        "LANGUAGE plpgsql AS $$ BEGIN PERFORM public.hijack_note('{n}'); "
        "RETURN public.l2_distance(a, b); END $$").format(
        s=s, n=sql.SQL(f"{schema}.<->(vector,vector)")))
    conn.execute(sql.SQL("CREATE OPERATOR {s}.<-> (LEFTARG = public.vector, "
                         "RIGHTARG = public.vector, FUNCTION = {s}.hijack_l2)").format(s=s))
    conn.execute(sql.SQL("GRANT EXECUTE ON FUNCTION {s}.hijack_l2(public.vector, public.vector) "
                         "TO PUBLIC").format(s=s))


@pytest.fixture(scope="module")
def world(cluster, model_server_process):
    """The victim's tables, view and model (made on a clean path), then the
    attacker's plants, then the victim's default search_path made hostile."""
    with scratch_database(cluster, "hij_", template="aidb_template") as dbname:
        cast = make_cast(cluster, dbname)
        v = sql.Identifier(cast.victim)
        with cast.session(cast.victim) as victim:
            victim.execute(sql.SQL("CREATE TABLE {}.docs (id int PRIMARY KEY, body text)").format(v))
            victim.execute(sql.SQL("CREATE TABLE {}.tdocs (k text PRIMARY KEY, body text)").format(v))
            victim.execute(sql.SQL("CREATE TABLE {}.live (id bigint PRIMARY KEY, body text)").format(v))
            victim.execute(sql.SQL("INSERT INTO {}.docs SELECT n, 'doc ' || n "
                                   "FROM generate_series(1, 20) n").format(v))
            victim.execute(sql.SQL("INSERT INTO {}.tdocs SELECT 'k' || n, 'text doc ' || n "
                                   "FROM generate_series(1, 20) n").format(v))
            victim.execute(sql.SQL("CREATE VIEW {0}.vdocs AS SELECT id, body FROM {0}.docs")
                           .format(v))
            create_fake_model(victim, model_server_process, TEST_API_KEY)
        with cast.session(cast.attacker) as attacker:
            attacker.execute("CREATE TABLE public.hijacked (what text, by_role name)")
            attacker.execute("GRANT INSERT ON public.hijacked TO PUBLIC")
            attacker.execute("""
                CREATE FUNCTION public.hijack_note(what text) RETURNS void LANGUAGE plpgsql AS $$
                BEGIN INSERT INTO public.hijacked VALUES (what, current_user); END $$""")
            attacker.execute("GRANT EXECUTE ON FUNCTION public.hijack_note(text) TO PUBLIC")
            attacker.execute(sql.SQL("CREATE TABLE {}.src (id int PRIMARY KEY, body text)")
                             .format(sql.Identifier(cast.attacker)))
            attacker.execute(sql.SQL("INSERT INTO {}.src SELECT n, 'attacker doc ' || n "
                                     "FROM generate_series(1, 5) n")
                             .format(sql.Identifier(cast.attacker)))
            create_fake_model(attacker, model_server_process, TEST_API_KEY,
                              name=f"{cast.attacker}_model")
            attacker.execute(
                "SELECT aidb.create_pipeline(name => 'attackers', source => %s, "
                "source_data_column => 'body', step_1 => 'KnowledgeBase', "
                "step_1_options => aidb.knowledge_base_config(%s), destination => %s)",
                (f"{cast.attacker}.src", f"{cast.attacker}_model", f"{cast.attacker}.attackers_dest"))
            for schema in ("public", cast.attacker):
                plant(attacker, schema)
            plant_vector_distance(attacker, cast.attacker)
        cluster.psql(f"ALTER ROLE {cast.victim} IN DATABASE {dbname} "
                     "SET search_path = public, pg_catalog")
        yield cast
    drop_roles(cluster, cast)


@pytest.fixture
def clean(world):
    """A superuser session on the default path, for checking (pg_catalog first)."""
    with world.session(SUPERUSER) as connection:
        connection.execute("TRUNCATE public.hijacked")
        yield connection


@pytest.fixture
def victim(world):
    """The victim's session: its default search_path, public first."""
    with world.session(world.victim) as connection:
        assert connection.execute("SHOW search_path").fetchone() == ("public, pg_catalog",)
        yield connection


@pytest.fixture
def hostile_superuser(world):
    with world.session(SUPERUSER, options=f"-c search_path={world.attacker},public,pg_catalog") \
            as connection:
        yield connection


def hijacks(clean):
    return clean.execute("SELECT what, by_role::text FROM public.hijacked").fetchall()


def assert_untouched(clean, step):
    """Nothing planted ran during `step`."""
    ran = sorted(set(hijacks(clean)))
    assert ran == [], f"{step}: planted objects ran: {ran}"


def test_the_plants_win_on_that_path(world, clean, victim, hostile_superuser):
    """The setup is effective: an ordinary query on the hostile path runs them,
    and the attacker cannot plant a cast between built-in types instead."""
    victim.execute("SELECT 1 = 1, 'a' || 'b', md5('x'), now(), 'x'::text")
    hostile_superuser.execute("SELECT count(*) FROM (VALUES (1)) v(x) WHERE x <> 2")
    seen = {what for what, _ in hijacks(clean)}
    assert {"public.=(pg_catalog.int4,pg_catalog.int4)", "public.||(pg_catalog.text,pg_catalog.text)",
            "public.md5", "public.now", "public.domain text",
            f"{world.attacker}.count(*)",
            f"{world.attacker}.<>(pg_catalog.int4,pg_catalog.int4)"} <= seen
    with world.session(world.attacker) as attacker, \
            pytest.raises(psycopg.errors.InsufficientPrivilege, match="must be owner of type"):
        attacker.execute("CREATE CAST (text AS integer) WITH INOUT")


def create(conn, name, source, key=None, model=MODEL, **options):
    named = [sql.SQL(", {} => {}").format(sql.Identifier(k), sql.Literal(v))
             for k, v in options.items()]
    conn.execute(sql.SQL(
        "SELECT aidb.create_pipeline(name => {}, source => {}, source_key_column => {}, "
        "source_data_column => 'body', step_1 => 'KnowledgeBase', "
        "step_1_options => aidb.knowledge_base_config({}){})").format(
        sql.Literal(name), sql.Literal(source), sql.Literal(key), sql.Literal(model),
        sql.SQL("").join(named)))


def destination_count(clean, name):
    destination = clean.execute("SELECT destination FROM aidb.pipelines WHERE name = %s",
                                (name,)).fetchone()[0]
    return clean.execute(sql.SQL("SELECT count(DISTINCT source_key) FROM {}")
                         .format(sql.SQL(destination))).fetchone()[0]


def test_every_entry_point_of_the_victim_ignores_the_plants(world, clean, victim):
    v = world.victim
    # create_pipeline: int key, text key, view, Live, Background.
    create(victim, "v_int", f"{v}.docs")
    create(victim, "v_text", f"{v}.tdocs")
    create(victim, "v_view", f"{v}.vdocs", key="id")
    create(victim, "v_live", f"{v}.live", auto_processing="Live")
    create(victim, "v_background", f"{v}.docs", auto_processing="Background",
           destination=f"{v}.v_background_dest")
    assert_untouched(clean, "create_pipeline")
    # Live writes, in the victim's hostile session (its own statements name
    # pg_catalog's operators: they are not what is tested).
    live = sql.SQL("{}.live").format(sql.Identifier(v))
    victim.execute(sql.SQL("INSERT INTO {} VALUES (1, 'live 1'), (2, 'live 2'), (3, 'live 3'), "
                           "(4, 'live 4'), (5, 'live 5')").format(live))
    victim.execute(sql.SQL("UPDATE {} SET body = 'live 2!' WHERE id OPERATOR(pg_catalog.=) 2")
                   .format(live))
    victim.execute(sql.SQL("DELETE FROM {} WHERE id OPERATOR(pg_catalog.=) 3").format(live))
    assert destination_count(clean, "v_live") == 4
    assert_untouched(clean, "Live writes")
    # The background worker (its role's default search_path is the hostile one).
    wait_for(lambda: destination_count(clean, "v_background") == 20,
             message="the background worker's backfill")
    assert_untouched(clean, "the background worker")
    # run_pipeline, reconcile_pipeline, pipem, errors.
    for name in ("v_int", "v_text", "v_view"):
        victim.execute("SELECT aidb.run_pipeline(%s)", (name,))
        assert destination_count(clean, name) == 20
    assert_untouched(clean, "run_pipeline")
    victim.execute(sql.SQL("UPDATE {}.docs SET body = pg_catalog.textcat(body, ' changed') "
                           "WHERE id <= 3").format(sql.Identifier(v)))
    for name in ("v_int", "v_view"):
        victim.execute("SELECT aidb.reconcile_pipeline(%s)", (name,))
        victim.execute("SELECT aidb.run_pipeline(%s)", (name,))
    assert_untouched(clean, "reconcile_pipeline")
    rows = victim.execute('SELECT pipeline, "Status" FROM aidb.pipem WHERE pipeline LIKE %s',
                          ("v\\_%",)).fetchall()
    assert len(rows) == 5
    assert_untouched(clean, "aidb.pipem")
    victim.execute("SELECT * FROM aidb.pipeline_errors")
    victim.execute("SELECT aidb.retry_pipeline_errors('v_int'), aidb.clear_pipeline_errors('v_int')")
    assert_untouched(clean, "pipeline errors")
    # Retrieval and the model functions.
    assert len(victim.execute("SELECT * FROM aidb.retrieve_key('v_int', 'doc 7', 3)").fetchall()) == 3
    assert len(victim.execute("SELECT * FROM aidb.retrieve_text('v_text', 'doc 7', 2)").fetchall()) == 2
    victim.execute("SELECT aidb.encode_text(%s, 'hello'), aidb.encode_text_batch(%s, "
                   "ARRAY['a', 'b'])", (MODEL, MODEL))
    assert_untouched(clean, "retrieval and encode_text")
    # The external worker, as the victim.
    victim.execute(sql.SQL("INSERT INTO {}.docs VALUES (21, 'doc 21')").format(sql.Identifier(v)))
    worker = aidb.Worker(world.dsn(v), pipelines=["v_int"], once=True)
    assert asyncio.run(worker.run()) == 0
    assert destination_count(clean, "v_int") == 21
    assert_untouched(clean, "the external worker")
    # update and delete.
    victim.execute("SELECT aidb.update_pipeline('v_text', 'Live')")
    victim.execute("SELECT aidb.update_pipeline('v_text', 'Disabled', batch_size => 7)")
    for name in ("v_int", "v_text", "v_view", "v_live", "v_background"):
        victim.execute("SELECT aidb.delete_pipeline(%s, drop_destination => true)", (name,))
    assert_untouched(clean, "update and delete")


def test_a_superuser_on_the_attackers_path_runs_none_of_its_plants(world, clean,
                                                                  hostile_superuser):
    su = hostile_superuser
    a = world.attacker
    create(su, "s_pipe", f"{a}.src", model=f"{a}_model", owner_role=a,
           destination=f"{a}.s_pipe_dest")
    su.execute(sql.SQL("UPDATE {}.src SET body = pg_catalog.textcat(body, '?') "
                       "WHERE id OPERATOR(pg_catalog.=) 1").format(sql.Identifier(a)))
    for name in ("s_pipe", "attackers"):
        su.execute("SELECT aidb.run_pipeline(%s)", (name,))
        su.execute("SELECT aidb.reconcile_pipeline(%s)", (name,))
    assert destination_count(clean, "attackers") == 5
    su.execute("SELECT * FROM aidb.pipem")
    assert len(su.execute("SELECT * FROM aidb.retrieve_text('attackers', 'doc', 2)").fetchall()) == 2
    su.execute("SELECT aidb.encode_text(%s, 'x')", (f"{a}_model",))
    su.execute("SELECT aidb.update_pipeline('s_pipe', 'Live')")
    su.execute("SELECT aidb.delete_pipeline('s_pipe', drop_destination => true)")
    assert_untouched(clean, "a superuser's calls")
