"""Retrieval: who may search a destination, that nothing of its owner's runs
with the searcher's rights, and that a search returns as many rows as it
promises, with and without a vector index.

Real cluster, real extension, the fake OpenAI-compatible server over HTTP.
The roles are real login roles: a pipeline owner (member of aidb_users), a
reader granted only SELECT on the destination (and USAGE on its schema), and
a role granted nothing. Expected answers are computed here, independently:
the distance from the query's vector (fake_vectors.fake_embedding, the exact
vector the server returns) to every vector the destination holds.
"""

import math
import threading
import uuid
from types import SimpleNamespace

import psycopg
import pytest
from psycopg import sql

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.fake_vectors import fake_embedding
from tests.support.pipeline_checks import (
    DIMS, MODEL, SERVER_MODEL, create_docs, create_fake_model, destination_contents)

QUERY = "document about telescopes"
ROWS = 300                          # more than pgvector's default hnsw.ef_search (40)
WORDS = ("alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima "
         "mike november oscar papa quebec romeo sierra tango uniform victor").split()
# What a retrieval may change for itself, and must leave as it found it.
SETTINGS = ("hnsw.ef_search", "hnsw.iterative_scan", "ivfflat.iterative_scan", "ivfflat.probes",
            "enable_indexscan", "row_security", "jit")


# --- roles and pipelines -------------------------------------------------------------------

@pytest.fixture
def people(cluster, dbname):
    """owner (in aidb_users, with a schema of its own), reader and nobody:
    login roles with a connection each; dropped after the test."""
    tag = uuid.uuid4().hex[:8]
    names = {who: f"rt_{who}_{tag}" for who in ("owner", "reader", "nobody")}
    cluster.psql(f"CREATE ROLE {names['owner']} LOGIN IN ROLE aidb_users; "
                 f"CREATE ROLE {names['reader']} LOGIN; CREATE ROLE {names['nobody']} LOGIN")
    cluster.psql(f"CREATE SCHEMA AUTHORIZATION {names['owner']}", dbname=dbname)
    connections = {who: psycopg.connect(cluster.dsn(dbname, user=name), autocommit=True)
                   for who, name in names.items()}
    yield SimpleNamespace(**{who: SimpleNamespace(name=names[who], conn=connections[who])
                             for who in names})
    for connection in connections.values():
        connection.close()
    cluster.psql(f"SELECT aidb.delete_pipeline(name) FROM aidb.pipelines "
                 f"WHERE owner_role::text = '{names['owner']}'; "
                 f"DROP SCHEMA {names['owner']} CASCADE; "
                 + "".join(f"DROP OWNED BY {name}; " for name in names.values()), dbname=dbname)
    cluster.psql("".join(f"DROP ROLE {name}; " for name in names.values()))


def numbered_bodies(count, sentences=1):
    """Distinct bodies; with sentences > 1, long enough for several chunks."""
    return [(i, " ".join(f"{WORDS[(i + s) % len(WORDS)]} {WORDS[(i * 7 + s) % len(WORDS)]} "
                         f"sentence {s} of document {i}." for s in range(sentences)))
            for i in range(1, count + 1)]


def make_pipeline(conn, rows, index="hnsw", chunk_length=None, name="p"):
    """A pipeline over `rows` of a fresh docs table, run to completion
    (run_pipeline builds the configured index once the backlog is drained)."""
    create_docs(conn, rows)
    vector_index = {"hnsw": {"type": "hnsw"}, "ivfflat": {"type": "ivfflat", "lists": 10},
                    "none": {"type": "none"}}[index]
    kb = sql.SQL("aidb.knowledge_base_config({}, vector_index => {})").format(
        sql.Literal(MODEL), sql.Literal(psycopg.types.json.Jsonb(vector_index)))
    steps = sql.SQL("step_1 => 'KnowledgeBase', step_1_options => {}").format(kb)
    if chunk_length is not None:
        steps = sql.SQL("step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config({}), "
                        "step_2 => 'KnowledgeBase', step_2_options => {}").format(
            sql.Literal(chunk_length), kb)
    conn.execute(sql.SQL("SELECT aidb.create_pipeline({}, 'docs', source_data_column => 'body', {})")
                 .format(sql.Literal(name), steps))
    conn.execute("SELECT aidb.run_pipeline(%s)", (name,))
    return conn.execute("SELECT format('%%I.%%I', n.nspname, c.relname) FROM aidb.pipelines p "
                        "JOIN aidb.pipeline_registry r ON r.name = p.name JOIN pg_class c ON c.oid = r.destination "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE p.name = %s", (name,)).fetchone()[0]


def vector_indexes(conn, destination):
    return conn.execute("SELECT am.amname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "JOIN pg_am am ON am.oid = c.relam "
                        "WHERE i.indrelid = %s::regclass AND am.amname <> 'btree'",
                        (destination,)).fetchall()


def grant_reader(people, destination):
    people.owner.conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}; GRANT SELECT ON {} TO {}").format(
        sql.Identifier(people.owner.name), sql.Identifier(people.reader.name),
        sql.SQL(destination), sql.Identifier(people.reader.name)))


def retrieve(conn, topk, deduplicate=True, query=QUERY, name="p"):
    return conn.execute("SELECT key, part_id, value, distance FROM aidb.retrieve_text(%s, %s, %s, %s)",
                        (name, query, topk, deduplicate)).fetchall()


def retrieve_traced(conn, topk, deduplicate=True):
    """retrieve(), and how the search was answered (the function says so at
    DEBUG1): .path is "index" or "exact", .steps the messages."""
    messages = []

    def handler(diagnostic):
        messages.append(diagnostic.message_primary)
    conn.add_notice_handler(handler)
    conn.execute("SET client_min_messages = debug1")
    try:
        rows = retrieve(conn, topk, deduplicate)
    finally:
        conn.execute("RESET client_min_messages")
        conn.remove_notice_handler(handler)
    steps = [m for m in messages if m.startswith("retrieval from")]
    assert steps, messages
    return rows, SimpleNamespace(path="exact" if steps[-1].endswith("exact scan") else "index",
                                 steps=steps)


def exact_answer(owner_conn, topk, deduplicate=True, query=QUERY):
    """[(key, part id, distance)] nearest first, from the destination's
    vectors and the query's own, by L2 distance (the pipelines' default)."""
    q = fake_embedding(query, DIMS, SERVER_MODEL)
    ranked = sorted((math.dist(q, vector), str(key), part_id)
                    for (key, part_id), (_, vector) in destination_contents(owner_conn).items())
    seen, answer = set(), []
    for distance, key, part_id in ranked:
        if deduplicate and key in seen:
            continue
        seen.add(key)
        answer.append((key, part_id, distance))
    return answer[:topk]


def assert_answer(rows, owner_conn, topk, deduplicate, min_recall):
    """As many rows as the destination can give, nearest first, each with its
    true distance; with deduplicate one row per key, holding its best part;
    and at least `min_recall` of the exact answer (1.0: exactly it)."""
    exact = exact_answer(owner_conn, topk, deduplicate)
    assert len(rows) == len(exact)
    distances = [row[3] for row in rows]
    assert distances == sorted(distances)
    truth = {(str(k), p): d for k, p, d in exact_answer(owner_conn, 10 ** 6, deduplicate=False)}
    for key, part_id, _, distance in rows:
        assert distance == pytest.approx(truth[(key, part_id)], abs=1e-5)
    if deduplicate:
        assert len({row[0] for row in rows}) == len(rows)
        best = {}
        for (key, part_id), distance in truth.items():
            best[key] = min(best.get(key, math.inf), distance)
        holding_best = sum(distance == pytest.approx(best[key], abs=1e-5) for key, _, _, distance in rows)
        assert holding_best >= min_recall * len(rows)
    found = {(row[0], row[1]) for row in rows}
    recall = len(found & {(k, p) for k, p, _ in exact}) / max(1, len(exact))
    assert recall >= min_recall, f"recall {recall:.3f} of the exact answer"


def settings(conn):
    conn.execute("SELECT '[1]'::public.vector")      # pgvector's settings exist once it is loaded
    return {name: conn.execute("SELECT current_setting(%s, true)", (name,)).fetchone()[0]
            for name in SETTINGS}


def requests_sent(model_server):
    return model_server.state()["requests_total"]


# --- 1. readers ----------------------------------------------------------------------------

@pytest.mark.smoke
def test_a_reader_with_select_retrieves_and_a_role_without_it_is_refused(people, model_server):
    create_fake_model(people.owner.conn, model_server.url, TEST_API_KEY)
    destination = make_pipeline(people.owner.conn, numbered_bodies(20))
    # Before the grant the reader is refused, before any request is sent.
    sent = requests_sent(model_server)
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match=r'permission denied for the destination .* of pipeline "p"'):
        retrieve(people.reader.conn, 3)
    grant_reader(people, destination)
    rows = retrieve(people.reader.conn, 5)
    assert_answer(rows, people.owner.conn, 5, True, min_recall=1.0)
    assert retrieve(people.owner.conn, 5) == rows
    assert people.reader.conn.execute("SELECT key FROM aidb.retrieve_key('p', %s, 2)", (QUERY,)
                                      ).fetchall() == [(row[0],) for row in rows[:2]]
    assert requests_sent(model_server) == sent + 3
    # The role granted nothing: a clear error, and no model request made for it.
    sent = requests_sent(model_server)
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        retrieve(people.nobody.conn, 3)
    assert 'permission denied for the destination' in str(refused.value)
    assert "GRANT SELECT" in refused.value.diag.message_hint
    # Nor straight through the internal function.
    pipeline_id = people.nobody.conn.execute("SELECT id FROM aidb.pipeline_registry WHERE name = 'p'"
                                             ).fetchone()[0]
    with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
        people.nobody.conn.execute("SELECT aidb._embed_query(%s, 'x')", (pipeline_id,))
    assert people.nobody.name in refused.value.diag.message_detail
    assert requests_sent(model_server) == sent
    # SELECT without USAGE on the schema is not enough either.
    people.owner.conn.execute(sql.SQL("REVOKE USAGE ON SCHEMA {} FROM {}").format(
        sql.Identifier(people.owner.name), sql.Identifier(people.reader.name)))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
        retrieve(people.reader.conn, 3)
    assert requests_sent(model_server) == sent


def test_the_role_a_session_acts_as_is_the_one_checked(cluster, dbname, people, model_server):
    """SET ROLE from a superuser session searches with that role's rights, both
    for reading the destination and for embedding the query; a SECURITY
    DEFINER wrapper owned by the pipeline's owner does not lend its rights."""
    create_fake_model(people.owner.conn, model_server.url, TEST_API_KEY)
    destination = make_pipeline(people.owner.conn, numbered_bodies(10))
    grant_reader(people, destination)
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as admin:
        pipeline_id = admin.execute("SELECT id FROM aidb.pipeline_registry WHERE name = 'p'").fetchone()[0]
        admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(people.reader.name)))
        assert len(retrieve(admin, 3)) == 3
        admin.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(people.nobody.name)))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied"):
            retrieve(admin, 3)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to embed"):
            admin.execute("SELECT aidb._embed_query(%s, 'x')", (pipeline_id,))
    # The owner's definer function reads the destination as the owner, but
    # the session's role, nobody, may not have queries embedded for it.
    people.owner.conn.execute(sql.SQL("""
        CREATE FUNCTION {}.search(q text) RETURNS SETOF text LANGUAGE sql SECURITY DEFINER
        SET search_path = pg_catalog, pg_temp
        AS $$ SELECT key FROM aidb.retrieve_key('p', q, 3) $$;
        GRANT USAGE ON SCHEMA {} TO {}""").format(
        sql.Identifier(people.owner.name), sql.Identifier(people.owner.name),
        sql.Identifier(people.nobody.name)))
    search = sql.SQL("SELECT * FROM {}.search('x')").format(sql.Identifier(people.owner.name))
    assert len(people.owner.conn.execute(search).fetchall()) == 3
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to embed"):
        people.nobody.conn.execute(search)


def test_a_reader_never_sees_the_models_credentials(cluster, dbname, people, model_server):
    log_start = len(cluster.log_text())          # the log is the session's: read this test's part
    create_fake_model(people.owner.conn, model_server.url, TEST_API_KEY)
    destination = make_pipeline(people.owner.conn, numbered_bodies(10))
    grant_reader(people, destination)
    reader = people.reader.conn
    # Not through the model tables and views, nor by embedding with it directly.
    assert reader.execute("SELECT count(*) FROM aidb.model_credentials").fetchone() == (0,)
    assert reader.execute("SELECT has_credentials, models::text LIKE %s FROM aidb.models "
                          "WHERE name = %s", (f"%{TEST_API_KEY}%", MODEL)).fetchone() == (True, False)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="credentials of model"):
        reader.execute("SELECT aidb.encode_text(%s, 'x')", (MODEL,))
    # Not in pg_stat_activity while a search waits for the model, whoever looks.
    model_server.set_fault("hang")
    outcome = {}
    searcher = psycopg.connect(cluster.dsn(dbname, user=people.reader.name), autocommit=True)
    thread = threading.Thread(target=lambda: outcome.update(rows=retrieve(searcher, 3)))
    thread.start()
    try:
        pid = searcher.info.backend_pid
        wait_for(lambda: model_server.state()["in_flight"] == 1
                 and reader.execute("SELECT state FROM pg_stat_activity WHERE pid = %s",
                                    (pid,)).fetchone() == ("active",),
                 message="the search waiting for the model")
        with psycopg.connect(cluster.dsn(dbname), autocommit=True) as admin:
            for looker in (reader, admin):
                activity = looker.execute("SELECT a::text FROM pg_stat_activity a").fetchall()
                assert activity and not any(TEST_API_KEY in row[0] for row in activity)
    finally:
        model_server.configure(fault="none")
        thread.join(timeout=30)
        searcher.close()
    assert len(outcome["rows"]) == 3
    # Not in the error when the model rejects the key, nor in the server log.
    model_server.set_api_key("sk-another-key-9876543210")
    with pytest.raises(psycopg.Error) as rejected:
        retrieve(reader, 3)
    diag = rejected.value.diag
    text = " ".join(str(part) for part in (rejected.value, diag.message_detail, diag.message_hint,
                                           diag.context))
    assert "401" in text or "credential" in text.lower()
    assert TEST_API_KEY not in text
    log = cluster.log_text()[log_start:]
    assert diag.message_primary in log            # the error was logged, without the key
    assert TEST_API_KEY not in log


def test_an_owner_cannot_lend_another_users_key_to_readers(cluster, dbname, people, model_server):
    """A pipeline owner may rewrite the steps of their own registry row; the
    query is then still not embedded with a model whose key is someone else's."""
    create_fake_model(people.owner.conn, model_server.url, TEST_API_KEY)
    other = "rt_other_" + uuid.uuid4().hex[:8]
    cluster.psql(f"CREATE ROLE {other} LOGIN IN ROLE aidb_users; "
                 f"CREATE SCHEMA AUTHORIZATION {other}", dbname=dbname)
    try:
        with psycopg.connect(cluster.dsn(dbname, user=other), autocommit=True) as conn:
            create_fake_model(conn, model_server.url, TEST_API_KEY, name="their_model")
            conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
            conn.execute("INSERT INTO docs VALUES (1, 'one')")
            conn.execute("SELECT aidb.create_pipeline('theirs', 'docs', source_data_column => 'body', "
                         "step_1 => 'KnowledgeBase', "
                         "step_1_options => aidb.knowledge_base_config('their_model'))")
            conn.execute("SELECT aidb.run_pipeline('theirs')")
            sent = requests_sent(model_server)
            forge = ("UPDATE aidb.pipeline_registry SET steps = jsonb_set(steps, "
                     f"'{{-1,options,model}}', to_jsonb('{MODEL}'::text)) WHERE name = 'theirs'")
            # The registry is closed to such writes; the row as a forgery would
            # leave it is made by a superuser, to test the next defence.
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(forge)
            cluster.psql(forge, dbname=dbname)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                retrieve(conn, 1, name="theirs")
            assert requests_sent(model_server) == sent
    finally:
        cluster.psql(f"SELECT aidb.delete_pipeline(name) FROM aidb.pipelines WHERE name = 'theirs'; "
                     f"DROP SCHEMA {other} CASCADE; "
                     f"DROP OWNED BY {other}", dbname=dbname)
        cluster.psql(f"DROP ROLE {other}")


# --- 2. nothing of the owner's runs with the reader's rights ----------------------------

@pytest.fixture
def trap_log(cluster, dbname):
    """A table any role may append to: trap functions record who ran them."""
    cluster.psql("CREATE TABLE public.trap_log (fn text, who text); "
                 "GRANT INSERT, SELECT ON public.trap_log TO PUBLIC", dbname=dbname)

    def entries():
        with psycopg.connect(cluster.dsn(dbname), autocommit=True) as admin:
            return admin.execute("SELECT fn, who FROM public.trap_log").fetchall()
    return entries


def trap_function(schema, name, args, returns):
    """SQL creating schema.name(args) that logs its call and returns NULL."""
    return sql.SQL("CREATE FUNCTION {}.{}({}) RETURNS {} LANGUAGE sql AS $$ "
                   "INSERT INTO public.trap_log VALUES ({}, current_user::text); "
                   "SELECT NULL::{} $$").format(
        sql.Identifier(schema), sql.Identifier(name), sql.SQL(args), sql.SQL(returns),
        sql.Literal(f"{schema}.{name}"), sql.SQL(returns))


def test_row_level_security_on_the_destination_is_refused_not_run(people, model_server, trap_log):
    create_fake_model(people.owner.conn, model_server.url, TEST_API_KEY)
    destination = make_pipeline(people.owner.conn, numbered_bodies(10))
    grant_reader(people, destination)
    owner = people.owner.conn
    owner.execute(trap_function(people.owner.name, "policy_check", "", "boolean"))
    owner.execute(sql.SQL("GRANT USAGE ON SCHEMA {0} TO PUBLIC; ALTER TABLE {1} ENABLE ROW LEVEL SECURITY; "
                          "CREATE POLICY everyone ON {1} USING ({0}.policy_check() IS NULL)").format(
        sql.Identifier(people.owner.name), sql.SQL(destination)))
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match="row-level security on the destination .* applies to role"):
        retrieve(people.reader.conn, 3)
    assert trap_log() == []
    # Its owner is not subject to the policy, and still searches.
    assert len(retrieve(owner, 3)) == 3
    assert trap_log() == []


def test_a_destination_turned_into_a_view_is_refused(people, model_server, trap_log):
    """PostgreSQL 15 still turns an empty table into a view with CREATE RULE
    "_RETURN"; the view's functions would run as the reader."""
    owner = people.owner.conn
    if owner.info.server_version >= 160000:
        pytest.skip("PostgreSQL 16 and later cannot turn a table into a view")
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    destination = make_pipeline(owner, numbered_bodies(10))
    grant_reader(people, destination)
    owner.execute(trap_function(people.owner.name, "leak", "", "integer"))
    owner.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO PUBLIC").format(sql.Identifier(people.owner.name)))
    owner.execute(sql.SQL("DELETE FROM {}").format(sql.SQL(destination)))
    for index in owner.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass",
                               (destination,)).fetchall():
        owner.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT IF EXISTS {}").format(
            sql.SQL(destination), sql.Identifier(index[0].split(".")[-1])))
        owner.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.SQL(index[0])))
    owner.execute(sql.SQL("VACUUM {}").format(sql.SQL(destination)))   # clears relhasindex
    owner.execute(sql.SQL(
        "CREATE RULE \"_RETURN\" AS ON SELECT TO {} DO INSTEAD "
        "SELECT 1 AS source_key, {}.leak() AS part_id, 'x'::text AS value, "
        "array_fill(0, ARRAY[{}])::real[]::vector({}) AS embedding, now() AS updated_at").format(
        sql.SQL(destination), sql.Identifier(people.owner.name), sql.Literal(DIMS), sql.SQL(str(DIMS))))
    assert owner.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (destination,)
                         ).fetchone() == ("v",)
    with pytest.raises(psycopg.errors.WrongObjectType, match="is no longer a table but a view"):
        retrieve(people.reader.conn, 3)
    assert trap_log() == []


def test_a_destination_column_of_another_type_is_refused(people, model_server):
    owner = people.owner.conn
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    destination = make_pipeline(owner, numbered_bodies(5))
    owner.execute(sql.SQL("ALTER TABLE {} ALTER COLUMN part_id TYPE bigint").format(sql.SQL(destination)))
    with pytest.raises(psycopg.errors.DatatypeMismatch,
                       match='column part_id of the destination .* is of type bigint, not integer'):
        retrieve(owner, 3)


def test_search_path_traps_never_run(cluster, dbname, people, model_server, trap_log):
    """Functions and operators that would win an unqualified lookup, in a
    schema first on the reader's search_path and in vector's own schema
    (which here anyone granted CREATE may write to)."""
    create_fake_model(people.owner.conn, model_server.url, TEST_API_KEY)
    destination = make_pipeline(people.owner.conn, numbered_bodies(30, sentences=3), chunk_length=40)
    grant_reader(people, destination)
    honest = retrieve(people.reader.conn, 10)
    cluster.psql(f"GRANT CREATE ON SCHEMA public TO {people.nobody.name}; "
                 f"GRANT CREATE ON DATABASE {dbname} TO {people.nobody.name}", dbname=dbname)
    attacker = people.nobody.conn
    attacker.execute("CREATE SCHEMA trap")
    attacker.execute("GRANT USAGE ON SCHEMA trap TO PUBLIC")
    for schema in ("trap", "public"):
        for name, args, returns in [("concat", "integer", "text"), ("format", "text, integer", "text"),
                                    ("set_config", "text, text, boolean", "text"),
                                    ("current_setting", "text, boolean", "text"),
                                    ("unnest", "text[]", "text"), ("has_table_privilege", "oid, text", "boolean"),
                                    ("int8eq", "bigint, integer", "boolean"),
                                    ("float8lt", "double precision, double precision", "boolean"),
                                    ("l2", "vector, vector", "double precision")]:
            attacker.execute(trap_function(schema, name, args, returns))
        for operator, function, left, right in [("=", "int8eq", "bigint", "integer"),
                                                ("<", "float8lt", "double precision", "double precision")]:
            attacker.execute(sql.SQL("CREATE OPERATOR {}.{} (FUNCTION = {}.{}, LEFTARG = {}, RIGHTARG = {})").format(
                sql.Identifier(schema), sql.SQL(operator), sql.Identifier(schema), sql.Identifier(function),
                sql.SQL(left), sql.SQL(right)))
    attacker.execute("CREATE OPERATOR trap.<-> (FUNCTION = trap.l2, LEFTARG = vector, RIGHTARG = vector)")
    reader = people.reader.conn
    reader.execute("SET search_path = trap, public, pg_catalog")
    assert retrieve(reader, 10) == honest
    assert len(retrieve(reader, 40, deduplicate=False)) == 40
    assert len(retrieve(reader, 1000)) == 30          # the exact scan too
    assert trap_log() == []


# --- 3. as many rows as asked for --------------------------------------------------------

@pytest.mark.parametrize("index", ["hnsw", "ivfflat", "none"])
def test_topk_rows_come_back_with_and_without_an_index(people, model_server, index):
    owner = people.owner.conn
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    destination = make_pipeline(owner, numbered_bodies(ROWS), index=index)
    assert vector_indexes(owner, destination) == ([] if index == "none" else [(index,)])
    grant_reader(people, destination)
    reader = people.reader.conn
    # Planned as on a large table: through the index whenever there is one.
    reader.execute("SET enable_seqscan = off")
    before = settings(reader)
    if index != "none":
        # Without help, the index stops short: this is what is being fixed.
        q = "[" + ",".join(map(str, fake_embedding(QUERY, DIMS, SERVER_MODEL))) + "]"
        plain = reader.execute(sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} ORDER BY embedding <-> %s::vector "
                                       "LIMIT 100) x").format(sql.SQL(destination)), (q,)).fetchone()[0]
        assert plain < 100
    # How close an answer comes to the exact one is the index's business:
    # HNSW's is near exact here; IVFFlat's depends on ivfflat.probes, the
    # lists searched first (1 of 10 by default, all 10 in the second round).
    rounds = {"hnsw": [(None, 0.9)], "ivfflat": [(None, 0.0), ("10", 1.0)], "none": [(None, 1.0)]}[index]
    for probes, min_recall in rounds:
        if probes:
            reader.execute("SELECT set_config('ivfflat.probes', %s, false)", (probes,))
            before["ivfflat.probes"] = probes
        for topk in (1, 100, 200, ROWS, 1000):
            for deduplicate in (True, False):
                rows, how = retrieve_traced(reader, topk, deduplicate)
                assert_answer(rows, owner, topk, deduplicate, min_recall)
                if index == "none":
                    assert how.path == "exact"
                elif topk in (100, 200) and not deduplicate:
                    assert how.path == "index", how.steps    # more rows than ef_search, from the index itself
    assert settings(reader) == before


def test_deduplicate_finds_topk_keys_among_many_parts(people, model_server):
    owner = people.owner.conn
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    destination = make_pipeline(owner, numbered_bodies(100, sentences=4), chunk_length=40)
    parts = owner.execute(sql.SQL("SELECT count(*), count(DISTINCT source_key), max(part_id) FROM {}").format(
        sql.SQL(destination))).fetchone()
    assert parts[0] > 3 * ROWS // 2 and parts[1] == 100 and parts[2] >= 3
    grant_reader(people, destination)
    reader = people.reader.conn
    reader.execute("SET enable_seqscan = off")
    for topk, deduplicate, expected in [(10, True, 10), (50, True, 50), (100, True, 100), (150, True, 100),
                                        (200, False, 200), (parts[0] + 5, False, parts[0])]:
        rows = retrieve(reader, topk, deduplicate)
        assert len(rows) == expected
        assert_answer(rows, owner, topk, deduplicate, min_recall=0.9)


def test_an_index_that_gives_out_is_replaced_by_an_exact_scan(people, model_server):
    """IVFFlat's iterative scan stops at ivfflat.max_probes lists (here one
    of ten): the rows still all come back, then exactly."""
    owner = people.owner.conn
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    make_pipeline(owner, numbered_bodies(ROWS), index="ivfflat")
    owner.execute("SET enable_seqscan = off")
    owner.execute("SET ivfflat.max_probes = 1")
    for topk, deduplicate in [(100, True), (150, False)]:
        rows, how = retrieve_traced(owner, topk, deduplicate)
        assert how.path == "exact", how.steps
        assert_answer(rows, owner, topk, deduplicate, min_recall=1.0)


@pytest.mark.parametrize("max_scan_tuples", [None, 20])
def test_deduplicate_when_one_key_crowds_the_nearest_parts(people, model_server, max_scan_tuples):
    """1,500 parts of one key lie nearer the query than anything else: the
    candidates grow until they hold topk keys, through the HNSW index while
    hnsw.max_scan_tuples allows, else by an exact scan."""
    owner = people.owner.conn
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    destination = make_pipeline(owner, numbered_bodies(100))
    q = fake_embedding(QUERY, DIMS, SERVER_MODEL)
    # Part g of key 0: the query's vector, its first coordinate moved by g / 10,000.
    owner.execute(sql.SQL("INSERT INTO {} (source_key, part_id, value, embedding) "
                          "SELECT 0, g, 'crowd ' || g, "
                          "       (SELECT array_agg(CASE WHEN i = 1 THEN x + g * 1e-4 ELSE x END ORDER BY i) "
                          "        FROM unnest(%s::real[]) WITH ORDINALITY u(x, i))::vector "
                          "FROM generate_series(1, 1500) g").format(sql.SQL(destination)), (q,))
    owner.execute("SET enable_seqscan = off")
    if max_scan_tuples is not None:
        owner.execute(f"SET hnsw.max_scan_tuples = {max_scan_tuples}")
    for topk in (1, 5, 60):
        rows, how = retrieve_traced(owner, topk)
        assert rows[0][0] == "0" and rows[0][1] == 1
        assert_answer(rows, owner, topk, True, min_recall=0.9)
        assert how.path == ("exact" if max_scan_tuples and topk > 1 else "index"), how.steps


def test_settings_are_put_back_inside_a_transaction(people, model_server):
    owner = people.owner.conn
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    make_pipeline(owner, numbered_bodies(60))
    owner.execute("SET enable_seqscan = off")
    owner.execute("SET hnsw.ef_search = 17")
    with owner.transaction():
        before = settings(owner)
        assert before["hnsw.ef_search"] == "17"
        assert len(retrieve(owner, 50)) == 50            # through the index
        assert len(retrieve(owner, 5000)) == 60          # exact
        assert settings(owner) == before
        # After an error inside the call too (a savepoint rolls it back).
        with pytest.raises(psycopg.errors.UndefinedObject):
            with owner.transaction():
                retrieve(owner, 5, name="no such pipeline")
        assert settings(owner) == before
    assert settings(owner) == before


def test_a_partitioned_destination_is_searched_with_select_on_its_root_only(people, model_server):
    """A reader granted SELECT on the partitioned table alone (not on its
    partitions) searches every partition, through their indexes."""
    owner = people.owner.conn
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    create_docs(owner, numbered_bodies(120))
    owner.execute(f"CREATE TABLE dest (source_key integer NOT NULL, part_id integer NOT NULL, "
                  f"value text NOT NULL, embedding vector({DIMS}), "
                  f"updated_at timestamp with time zone NOT NULL DEFAULT now(), "
                  f"PRIMARY KEY (source_key, part_id)) PARTITION BY HASH (source_key)")
    for remainder in range(3):
        owner.execute(f"CREATE TABLE dest_{remainder} PARTITION OF dest "
                      f"FOR VALUES WITH (MODULUS 3, REMAINDER {remainder})")
    owner.execute("SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', destination => 'dest', "
                  "step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config(%s))", (MODEL,))
    owner.execute("SELECT aidb.run_pipeline('p')")
    destination = f'"{people.owner.name}".dest'
    grant_reader(people, destination)
    reader = people.reader.conn
    reader.execute("SET enable_seqscan = off")
    paths = {}
    for topk, deduplicate in [(5, True), (60, False), (120, True), (500, False)]:
        rows, how = retrieve_traced(reader, topk, deduplicate)
        assert_answer(rows, owner, topk, deduplicate, min_recall=0.9)
        paths[topk] = how.path
    assert paths[60] == "index" and paths[500] == "exact"      # 500 > 120 rows
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        reader.execute(f'SELECT 1 FROM "{people.owner.name}".dest_0')  # partitions stay closed


# --- 4. arguments ---------------------------------------------------------------------------

def test_arguments_are_checked_and_named(people, model_server):
    owner = people.owner.conn
    create_fake_model(owner, model_server.url, TEST_API_KEY)
    make_pipeline(owner, numbered_bodies(12))
    for topk in (None, 0, -3):
        with pytest.raises(psycopg.errors.InvalidParameterValue,
                           match=f"topk must be at least 1, not {'NULL' if topk is None else topk}"):
            retrieve(owner, topk)
    for value in (2147483647, 2147483647 // 20 + 1):      # topk * 20 would overflow an integer
        assert len(retrieve(owner, value)) == 12
        assert len(retrieve(owner, value, deduplicate=False)) == 12
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="pipeline must not be NULL"):
        owner.execute("SELECT * FROM aidb.retrieve_key(NULL, 'x')")
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="query must not be NULL"):
        owner.execute("SELECT * FROM aidb.retrieve_key('p', NULL)")
    with pytest.raises(psycopg.errors.NullValueNotAllowed, match="deduplicate must not be NULL"):
        owner.execute("SELECT * FROM aidb.retrieve_text('p', 'x', 3, NULL)")
    with pytest.raises(psycopg.errors.UndefinedObject, match='pipeline "nope" does not exist'):
        owner.execute("SELECT * FROM aidb.retrieve_key('nope', 'x')")


def test_every_distance_operator_means_the_same_to_validation_index_and_retrieval(conn):
    """One table (aidb.pipeline.distance) names the distances: step
    validation accepts exactly its names, retrieval's SQL gets each
    operator from it, and the index's operator class orders by that very
    operator in pgvector's catalog."""
    from aidb.pipeline.distance import DISTANCE_OPERATORS
    from aidb.pipeline.steps.knowledge_base import OPTIONS
    [distance] = [option for option in OPTIONS if option.name == "distance_operator"]
    assert distance.allowed == tuple(DISTANCE_OPERATORS)
    for name, (operator, operator_class) in DISTANCE_OPERATORS.items():
        assert conn.execute("SELECT aidb._distance_operator(%s)", (name,)).fetchone() == (operator,)
        ordering = conn.execute(
            "SELECT o.oprname FROM pg_opclass c JOIN pg_am am ON am.oid = c.opcmethod "
            "JOIN pg_amop ao ON ao.amopfamily = c.opcfamily AND ao.amoppurpose = 'o' "
            "JOIN pg_operator o ON o.oid = ao.amopopr "
            "WHERE c.opcname = %s AND am.amname = 'hnsw'", (operator_class,)).fetchall()
        assert ordering == [(operator,)], (name, ordering)
    with pytest.raises(psycopg.errors.InvalidParameterValue, match='unknown distance operator "L1"'):
        conn.execute("SELECT aidb._distance_operator('L1')")
