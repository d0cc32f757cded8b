"""Several pipelines feeding one destination (sql/ext/26_shared_destinations.sql):
a table with a column `pipeline text` is shared, and each pipeline's writes,
deletes, TRUNCATE, reconcile, delete_pipeline, retrieval, pipem count and
vector index touch its own rows only. Attaching to a table needs the table
owner's rights; a destination of its own is refused to a second pipeline,
with a hint; shapes that do not fit are refused by name."""

import uuid

import psycopg
import pytest
from psycopg import sql

from tests.support.common import TEST_API_KEY
from tests.support.pipeline_checks import (
    DIMS, MODEL, create_fake_model, expected_destination, metrics, pipeline_errors)

SHARED = ("CREATE TABLE kb (pipeline text NOT NULL, source_key {key} NOT NULL, "
          "part_id int NOT NULL, value text NOT NULL, {embedding}"
          "updated_at timestamptz NOT NULL DEFAULT now(), "
          "PRIMARY KEY (pipeline, source_key, part_id))")


def create_shared(conn, key="text", vectors=True):
    conn.execute(SHARED.format(key=key, embedding=f"embedding vector({DIMS}), " if vectors else ""))


def create_kb_pipeline(conn, name, source, destination="kb", chunk=8, **options):
    """ChunkText then KnowledgeBase on the test model, into `destination`."""
    named = sql.SQL("").join(sql.SQL(", {} => {}").format(sql.Identifier(k), sql.Literal(v))
                             for k, v in options.items())
    conn.execute(sql.SQL(
        "SELECT aidb.create_pipeline({name}, {source}, source_data_column => 'body', "
        "destination => {destination}, step_1 => 'ChunkText', "
        "step_1_options => aidb.chunk_text_config({chunk}), step_2 => 'KnowledgeBase', "
        "step_2_options => aidb.knowledge_base_config({model}){named})").format(
        name=sql.Literal(name), source=sql.Literal(source), destination=sql.Literal(destination),
        chunk=sql.Literal(chunk), model=sql.Literal(MODEL), named=named))


def rows_of(conn, name, table="kb"):
    """{(key as text, part id): (value, vector)} of pipeline `name` in the table."""
    rows = conn.execute(sql.SQL("SELECT source_key::text, part_id, value, embedding::real[] "
                                "FROM {} WHERE pipeline = %s").format(sql.Identifier(table)), (name,))
    return {(key, part): (value, vector) for key, part, value, vector in rows}


def expected_rows(conn, name):
    return {(str(key), part): value for (key, part), value in expected_destination(conn, name).items()}


def assert_exact(conn, *names):
    """Each pipeline's rows are exactly what its source calls for (vectors
    compared to 1e-5), and the table holds no one else's."""
    for name in names:
        actual, expected = rows_of(conn, name), expected_rows(conn, name)
        assert actual.keys() == expected.keys(), name
        for part, (value, vector) in expected.items():
            assert actual[part][0] == value
            assert all(abs(a - b) < 1e-5 for a, b in zip(actual[part][1], vector))
        assert metrics(conn, name)["count(destination records)"] == len(expected), name
        assert pipeline_errors(conn, name) == []
    others = conn.execute("SELECT count(*) FROM kb WHERE NOT pipeline = ANY (%s)",
                          (list(names),)).fetchone()[0]
    assert others == 0


def run(conn, *names):
    for name in names:
        conn.execute("SELECT aidb.run_pipeline(%s)", (name,))


def test_two_sources_with_different_key_types_share_one_destination(conn, fake_model):
    conn.execute("CREATE TABLE a (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE b (id uuid PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE c (id text PRIMARY KEY, body text)")
    conn.execute("INSERT INTO a SELECT g, 'alpha document number ' || g FROM generate_series(1, 6) g")
    conn.execute("INSERT INTO b SELECT ('00000000-0000-0000-0000-00000000000' || g)::uuid, "
                 "'bravo ' || g FROM generate_series(1, 4) g")
    # The same key text in two pipelines: '1' of a (int) and '1' of c (text).
    conn.execute("INSERT INTO c VALUES ('1', 'charlie one'), ('x''y', 'charlie quote')")
    create_shared(conn)
    create_kb_pipeline(conn, "pa", "a")
    create_kb_pipeline(conn, "pb", "b", auto_processing="Live")
    create_kb_pipeline(conn, "pc", "c")
    run(conn, "pa", "pc")
    assert_exact(conn, "pa", "pb", "pc")

    conn.execute("UPDATE a SET body = 'changed' WHERE id = 1")
    conn.execute("DELETE FROM a WHERE id = 2")
    conn.execute("UPDATE a SET id = 20 WHERE id = 3")            # a key change
    conn.execute("DELETE FROM c WHERE id = '1'")                 # not a's '1'
    conn.execute("DELETE FROM b WHERE id = '00000000-0000-0000-0000-000000000001'")
    run(conn, "pa", "pc")
    assert_exact(conn, "pa", "pb", "pc")
    assert ("1", 0) in rows_of(conn, "pa") and ("1", 0) not in rows_of(conn, "pc")

    # TRUNCATE of one source empties only its pipeline's rows.
    conn.execute("TRUNCATE a")
    assert rows_of(conn, "pa") == {} and len(rows_of(conn, "pb")) > 0
    conn.execute("INSERT INTO a VALUES (7, 'after the truncate')")
    # Reconcile finds what changed behind capture's back, for its pipeline only.
    conn.execute("ALTER TABLE c DISABLE TRIGGER USER")
    conn.execute("UPDATE c SET body = 'changed without capture'")
    conn.execute("ALTER TABLE c ENABLE TRIGGER USER")
    assert conn.execute("SELECT aidb.reconcile_pipeline('pc')").fetchone()[0] == 1
    run(conn, "pa", "pc")
    assert_exact(conn, "pa", "pb", "pc")

    # Deleting one pipeline removes its rows only; the table stays.
    conn.execute("SELECT aidb.delete_pipeline('pb', drop_destination => true)")
    assert rows_of(conn, "pb") == {}
    assert_exact(conn, "pa", "pc")
    conn.execute("INSERT INTO a VALUES (8, 'still captured')")
    run(conn, "pa")
    assert_exact(conn, "pa", "pc")


def test_one_source_with_different_filters_feeds_one_destination(conn, fake_model):
    conn.execute("CREATE TABLE docs (id bigint PRIMARY KEY, body text, lang text)")
    conn.execute("INSERT INTO docs SELECT g, 'text ' || g, CASE WHEN g % 2 = 0 THEN 'en' ELSE 'fr' END "
                 "FROM generate_series(1, 8) g")
    create_shared(conn, key="bigint")
    create_kb_pipeline(conn, "en", "docs", source_filter="lang = 'en'")
    create_kb_pipeline(conn, "fr", "docs", source_filter="lang = 'fr'", auto_processing="Live")
    create_kb_pipeline(conn, "all", "docs")
    run(conn, "en", "all")
    assert_exact(conn, "en", "fr", "all")
    conn.execute("UPDATE docs SET lang = 'fr' WHERE id = 2")       # moves from en to fr
    conn.execute("DELETE FROM docs WHERE id = 3")
    conn.execute("INSERT INTO docs VALUES (9, 'nine', 'en')")
    run(conn, "en", "all")
    assert_exact(conn, "en", "fr", "all")
    conn.execute("SELECT aidb.delete_pipeline('all')")
    assert_exact(conn, "en", "fr")


def test_retrieval_and_the_vector_index_are_scoped_to_the_pipeline(conn, fake_model):
    conn.execute("CREATE TABLE a (id int PRIMARY KEY, body text)")
    conn.execute("CREATE TABLE b (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO a SELECT g, 'shared words ' || g FROM generate_series(1, 60) g")
    conn.execute("INSERT INTO b SELECT g, 'shared words ' || g FROM generate_series(1, 50) g")
    create_shared(conn, key="integer")
    create_kb_pipeline(conn, "pa", "a", chunk=100)
    create_kb_pipeline(conn, "pb", "b", chunk=100)
    run(conn, "pa", "pb")
    # Each pipeline's index covers its own rows (a partial index).
    predicates = dict(conn.execute(
        "SELECT c.relname, pg_get_expr(i.indpred, i.indrelid) FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = 'kb'::regclass "
        "AND i.indpred IS NOT NULL").fetchall())
    assert sorted(predicates.values()) == ["(pipeline = 'pa'::text)", "(pipeline = 'pb'::text)"]
    for name, count in (("pa", 60), ("pb", 50)):
        found = conn.execute("SELECT key FROM aidb.retrieve_key(%s, 'shared words 7', 1000)",
                             (name,)).fetchall()
        assert len(found) == count
        table = "a" if name == "pa" else "b"
        assert {int(k) for (k,) in found} == {i for (i,) in conn.execute(f"SELECT id FROM {table}")}
    # With the index and fewer rows asked for than the table holds.
    top = conn.execute("SELECT key, value FROM aidb.retrieve_text('pb', 'shared words 7', 5)").fetchall()
    assert len(top) == 5 and top[0] == ("7", "shared words 7")
    assert metrics(conn, "pa")["count(destination records)"] == 60


def test_a_destination_of_its_own_is_refused_to_a_second_pipeline_with_a_way_to_share_it(
        conn, fake_model):
    conn.execute("CREATE TABLE a (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO a VALUES (1, 'one'), (2, 'two')")
    create_kb_pipeline(conn, "first", "a", destination="first_embeddings")
    run(conn, "first")
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        create_kb_pipeline(conn, "second", "a", destination="first_embeddings")
    assert 'is already fed by pipeline "first"' in refused.value.diag.message_primary
    hint = refused.value.diag.message_hint
    assert "ADD COLUMN pipeline text NOT NULL DEFAULT 'first'" in hint
    # Following the hint: the first pipeline's functions follow the new shape
    # (the event trigger rebuilds them), and the second attaches.
    conn.execute("ALTER TABLE first_embeddings ADD COLUMN pipeline text NOT NULL DEFAULT 'first'")
    conn.execute("ALTER TABLE first_embeddings DROP CONSTRAINT first_embeddings_pkey, "
                 "ADD PRIMARY KEY (pipeline, source_key, part_id)")
    create_kb_pipeline(conn, "second", "a", destination="first_embeddings", chunk=2)
    conn.execute("INSERT INTO a VALUES (3, 'three four')")
    conn.execute("DELETE FROM a WHERE id = 1")
    run(conn, "first", "second")
    counts = dict(conn.execute("SELECT pipeline, count(DISTINCT source_key) FROM first_embeddings "
                               "GROUP BY 1").fetchall())
    assert counts == {"first": 2, "second": 2}


@pytest.mark.parametrize("table, source_key, complaint", [
    # Dimensions of another model.
    ("CREATE TABLE kb (pipeline text, source_key int, part_id int, value text, "
     "embedding vector(3), updated_at timestamptz)", None,
     "column embedding of shared destination \"public.kb\" is of type public.vector(3), but its "
     f"model gives vectors of public.vector({DIMS})"),
    # A key type of its own that is not the pipeline's.
    ("CREATE TABLE kb (pipeline text, source_key bigint, part_id int, value text, "
     f"embedding vector({DIMS}), updated_at timestamptz)", None,
     "column source_key of shared destination \"public.kb\" is of type bigint, but this "
     "pipeline's keys are integer"),
    # Text keys, but the pipeline's numeric keys have no exact text form.
    ("CREATE TABLE kb (pipeline text, source_key text, part_id int, value text, "
     f"embedding vector({DIMS}), updated_at timestamptz)", "numeric",
     "keys of type numeric cannot be kept as text in shared destination \"public.kb\""),
    # A unique key without the pipeline.
    ("CREATE TABLE kb (pipeline text, source_key int, part_id int, value text, "
     f"embedding vector({DIMS}), updated_at timestamptz, PRIMARY KEY (source_key, part_id))", None,
     "unique index public.kb_pkey of shared destination \"public.kb\" does not include column pipeline"),
    ("CREATE TABLE kb (pipeline int, source_key int, part_id int, value text, "
     f"embedding vector({DIMS}), updated_at timestamptz)", None,
     "column pipeline of shared destination \"public.kb\" is of type integer, not text"),
])
def test_a_shared_destination_that_does_not_fit_is_refused_by_name(conn, fake_model, table,
                                                                    source_key, complaint):
    conn.execute(f"CREATE TABLE a (id {source_key or 'int'} PRIMARY KEY, body text)")
    conn.execute(table)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as refused:
        create_kb_pipeline(conn, "p", "a")
    assert refused.value.diag.message_primary.endswith(complaint), refused.value.diag.message_primary
    assert conn.execute("SELECT count(*) FROM aidb.pipeline_registry").fetchone() == (0,)


@pytest.fixture
def two_roles(cluster, dbname):
    """A victim and an attacker, both aidb users, with a schema each."""
    tag = uuid.uuid4().hex[:8]
    names = {who: f"sd_{who}_{tag}" for who in ("victim", "attacker")}
    for name in names.values():
        cluster.psql(f"CREATE ROLE {name} LOGIN IN ROLE aidb_users")
        cluster.psql(f"CREATE SCHEMA AUTHORIZATION {name}", dbname=dbname)
    connections = {who: psycopg.connect(cluster.dsn(dbname, user=name), autocommit=True)
                   for who, name in names.items()}
    yield names, connections
    for connection in connections.values():
        connection.close()
    cluster.psql("SELECT aidb.delete_pipeline(name) FROM aidb.pipelines; "
                 + "".join(f"DROP SCHEMA {n} CASCADE; DROP OWNED BY {n}; " for n in names.values()),
                 dbname=dbname)
    cluster.psql("".join(f"DROP ROLE {n}; " for n in names.values()))


def test_a_pipeline_attaches_only_to_a_table_its_owner_owns(conn, model_server, two_roles):
    """The victim's shared table, fed by the victim's pipeline: the attacker
    cannot attach a pipeline to it (even with INSERT/DELETE granted), nor can
    a superuser attach one for the attacker; the victim's rows stay, and the
    attacker's own pipeline in its own shared table reads only its rows."""
    names, c = two_roles
    victim, attacker = c["victim"], c["attacker"]
    for who in ("victim", "attacker"):
        create_fake_model(c[who], model_server.url, TEST_API_KEY, name=f"{MODEL}_{who}")
        c[who].execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
        c[who].execute("INSERT INTO docs VALUES (1, 'one'), (2, 'two')")
        create_shared(c[who], key="integer")
    victim_kb = f"{names['victim']}.kb"
    victim.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON kb TO {names['attacker']}")
    victim.execute(f"GRANT USAGE ON SCHEMA {names['victim']} TO {names['attacker']}")
    victim.execute("SELECT aidb.create_pipeline('vp', 'docs', source_data_column => 'body', "
                   "destination => 'kb', step_1 => 'KnowledgeBase', "
                   f"step_1_options => aidb.knowledge_base_config('{MODEL}_victim'))")
    victim.execute("SELECT aidb.run_pipeline('vp')")
    before = victim.execute("SELECT pipeline, source_key, part_id FROM kb ORDER BY 2").fetchall()
    attach = ("SELECT aidb.create_pipeline('ap', %s, source_data_column => 'body', "
              "destination => %s, step_1 => 'KnowledgeBase', "
              f"step_1_options => aidb.knowledge_base_config('{MODEL}_attacker'){{}})")
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to attach"):
        attacker.execute(attach.format(""), (f"{names['attacker']}.docs", victim_kb))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to attach"):
        conn.execute(attach.format(", owner_role => %s"),
                     (f"{names['attacker']}.docs", victim_kb, names["attacker"]))
    assert victim.execute("SELECT pipeline, source_key, part_id FROM kb ORDER BY 2").fetchall() == before
    # In its own table, the attacker's pipeline sees and writes its own rows only.
    attacker.execute(attach.format(""), (f"{names['attacker']}.docs", f"{names['attacker']}.kb"))
    attacker.execute("SELECT aidb.run_pipeline('ap')")
    assert attacker.execute("SELECT count(*) FROM aidb.retrieve_key('ap', 'one', 10)").fetchone() == (2,)
    assert victim.execute("SELECT count(*) FROM kb WHERE pipeline = 'vp'").fetchone() == (2,)


def test_the_pipeline_column_of_a_destination_in_use_by_several_stays(conn, fake_model):
    conn.execute("CREATE TABLE a (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO a VALUES (1, 'one')")
    create_shared(conn, key="integer")
    create_kb_pipeline(conn, "p1", "a")
    create_kb_pipeline(conn, "p2", "a")
    for change, message in (
            ("DROP COLUMN pipeline CASCADE",
             'destination public.kb is shared by pipelines "p1" and "p2": its column pipeline '
             "cannot go"),
            ("ALTER COLUMN pipeline TYPE varchar(20)",
             "column pipeline of destination public.kb names the pipeline of each row: it must "
             "stay text, not character varying")):
        with pytest.raises(psycopg.errors.DependentObjectsStillExist) as refused:
            conn.execute(f"ALTER TABLE kb {change}")
        assert refused.value.diag.message_primary == message
    run(conn, "p1", "p2")
    assert_exact(conn, "p1", "p2")
    # With one pipeline left, the table may become its own again.
    conn.execute("SELECT aidb.delete_pipeline('p2')")
    conn.execute("ALTER TABLE kb DROP COLUMN pipeline CASCADE")
    conn.execute("ALTER TABLE kb ADD PRIMARY KEY (source_key, part_id)")
    conn.execute("INSERT INTO a VALUES (2, 'two')")
    run(conn, "p1")
    assert conn.execute("SELECT source_key FROM kb ORDER BY 1").fetchall() == [(1,), (2,)]
