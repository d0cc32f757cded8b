"""INSERT capture holds keys between a statement's row and statement
triggers (src/pending_keys.c): every committed row's key reaches the
backlog exactly once per insert, and nothing of what rolled back does,
whatever nests between the two triggers: savepoints, subtransactions of
other triggers that fail, statements of many rows, partitions, rows that an
UPDATE moves to another partition. From 1,000 keys a statement's keys go
into one backlog row as an array, which claims split: workers and
run_pipeline process each of its keys once.

The pipelines are Disabled unless a test says otherwise: nothing takes keys
out of the backlog, so it holds exactly what capture wrote.
"""

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tests.support.common import TEST_API_KEY
from tests.support.pipeline_checks import create_fake_model, create_pipeline
from tests.support.polling import wait_for


@pytest.fixture
def owner(aidb_user, model_server):
    """An aidb user with the test server's model, and its schema's name."""
    role, user = aidb_user
    create_fake_model(user, model_server.url, TEST_API_KEY)
    return role, user


def backlog_of(conn, name="p"):
    pipeline_id = conn.execute("SELECT id FROM aidb.pipeline_registry WHERE name = %s",
                               (name,)).fetchone()[0]
    return f"aidb._backlog_{pipeline_id}"


def queued(conn, backlog):
    """How often each key is queued, in rows of one key or in sets."""
    return dict(conn.execute(f"""
        SELECT k, count(*) FROM (SELECT key FROM {backlog} WHERE key IS NOT NULL
                                 UNION ALL SELECT unnest(keys) FROM {backlog}) AS b(k)
        GROUP BY k"""))


def backlog_rows(conn, backlog):
    """(rows of one key, rows holding a set) of the backlog."""
    return conn.execute(f"SELECT count(key), count(keys) FROM {backlog}").fetchone()


def insert_trigger_levels(conn, table):
    """(trigger name suffix, ROW or STATEMENT, has a new transition table) of
    aidb's INSERT triggers on `table`."""
    return sorted(conn.execute("""
        SELECT regexp_replace(tgname, '^aidb_[0-9]+_', ''),
               CASE WHEN tgtype & 1 = 1 THEN 'ROW' ELSE 'STATEMENT' END,
               tgnewtable IS NOT NULL
        FROM pg_trigger WHERE tgrelid = %s::regclass AND tgname ~ '^aidb_[0-9]+_insert'""",
                              (table,)).fetchall())


def test_insert_capture_is_a_row_and_a_statement_trigger_without_transition_table(owner):
    role, user = owner
    user.execute("CREATE TABLE src (id int PRIMARY KEY, body text)")
    create_pipeline(user, source="src")
    assert insert_trigger_levels(user, "src") == [("insert", "STATEMENT", False),
                                                  ("insert_row", "ROW", False)]
    # Live captures in the engine, through the capture function: no row trigger.
    user.execute("SELECT aidb.update_pipeline('p', auto_processing => 'Live')")
    assert insert_trigger_levels(user, "src") == [("insert", "STATEMENT", True)]
    user.execute("SELECT aidb.update_pipeline('p', auto_processing => 'Disabled')")
    assert insert_trigger_levels(user, "src") == [("insert", "STATEMENT", False),
                                                  ("insert_row", "ROW", False)]


def test_a_failed_nested_insert_keeps_the_outer_statements_keys(owner):
    """A user's row trigger inserts into the same source inside an exception
    block, which fails for even ids: the nested statement's trigger writes
    keys while the outer statement still holds some, and its subtransaction
    rolls back. Every outer row, and the nested rows that stayed, must be
    queued once; the rolled-back nested rows never."""
    role, user = owner
    user.execute("CREATE TABLE src (id int PRIMARY KEY, body text)")
    create_pipeline(user, source="src")
    user.execute("""
        CREATE FUNCTION echo() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.id < 1000 THEN
                BEGIN
                    INSERT INTO src VALUES (NEW.id + 1000, 'echo');
                    IF NEW.id % 2 = 0 THEN
                        RAISE EXCEPTION 'no echo for %', NEW.id;
                    END IF;
                EXCEPTION WHEN raise_exception THEN
                    NULL;
                END;
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER zz_echo AFTER INSERT ON src FOR EACH ROW EXECUTE FUNCTION echo();""")
    user.execute("INSERT INTO src SELECT g, 'outer' FROM generate_series(1, 40) g")
    committed = {row[0] for row in user.execute("SELECT id FROM src")}
    assert committed == set(range(1, 41)) | {i + 1000 for i in range(1, 41, 2)}
    assert queued(user, backlog_of(user)) == {key: 1 for key in committed}


def test_a_statement_of_many_rows_writes_as_it_goes_and_loses_none(owner):
    """Past 10,000 held keys the row trigger writes them itself: 25,001 rows
    make three backlog rows of sets (10,000, 10,000, 5,001), each key once;
    then a rollback to a savepoint taken before a second such statement drops
    all of its keys, written or held."""
    role, user = owner
    user.execute("CREATE TABLE src (id bigint PRIMARY KEY, body text)")
    create_pipeline(user, source="src")
    backlog = backlog_of(user)
    with user.transaction():
        user.execute("INSERT INTO src SELECT g, 'x' FROM generate_series(1, 25001) g")
        user.execute("SAVEPOINT s")
        user.execute("INSERT INTO src SELECT g, 'y' FROM generate_series(30001, 52000) g")
        user.execute("ROLLBACK TO SAVEPOINT s")
    counts = queued(user, backlog)
    assert len(counts) == 25001 and set(counts.values()) == {1}
    assert min(counts) == 1 and max(counts) == 25001
    assert backlog_rows(user, backlog) == (0, 3)
    assert user.execute(f"SELECT array_agg(cardinality(keys) ORDER BY cardinality(keys)) FROM {backlog}"
                        ).fetchone()[0] == [5001, 10000, 10000]


def test_partitions_queue_each_row_once(owner):
    """Row triggers on the leaves, statement triggers everywhere: rows
    inserted through the parent, straight into a partition, and moved to
    another partition by an UPDATE are all queued."""
    role, user = owner
    user.execute("""
        CREATE TABLE src (id int PRIMARY KEY, body text) PARTITION BY RANGE (id);
        CREATE TABLE src_low PARTITION OF src FOR VALUES FROM (0) TO (100);
        CREATE TABLE src_high PARTITION OF src FOR VALUES FROM (100) TO (200)
            PARTITION BY RANGE (id);
        CREATE TABLE src_high_a PARTITION OF src_high FOR VALUES FROM (100) TO (200);""")
    create_pipeline(user, source="src")
    assert insert_trigger_levels(user, "src") == [("insert", "STATEMENT", False)]
    assert insert_trigger_levels(user, "src_high") == [("insert", "STATEMENT", False)]
    for leaf in ("src_low", "src_high_a"):
        assert insert_trigger_levels(user, leaf) == [("insert", "STATEMENT", False),
                                                     ("insert_row", "ROW", False)]
    user.execute("INSERT INTO src SELECT g, 'via parent' FROM generate_series(1, 150, 7) g")
    user.execute("INSERT INTO src_low VALUES (2, 'direct')")
    user.execute("INSERT INTO src_high_a VALUES (199, 'direct')")
    backlog = backlog_of(user)
    expected = {key: 1 for key in list(range(1, 151, 7)) + [2, 199]}
    assert queued(user, backlog) == expected
    # A new partition gets its triggers (part 70's event trigger); its rows are queued.
    user.execute("CREATE TABLE src_top PARTITION OF src FOR VALUES FROM (200) TO (300)")
    assert insert_trigger_levels(user, "src_top") == [("insert", "STATEMENT", False),
                                                      ("insert_row", "ROW", False)]
    user.execute("INSERT INTO src VALUES (250, 'new partition')")
    expected[250] = 1
    assert queued(user, backlog) == expected
    # An UPDATE that moves a row to another partition queues its key.
    user.execute("UPDATE src SET id = 108, body = 'moved' WHERE id = 8")
    assert queued(user, backlog).get(108, 0) >= 1


# One step of a generated transaction: an INSERT of keys (a range; NULL keys
# too), optionally in a savepoint that is rolled back or released.
STEP = st.tuples(st.integers(0, 40),                 # first key, in tens
                 st.integers(0, 30),                 # rows
                 st.booleans(),                      # with a NULL key row
                 st.sampled_from(["plain", "released", "rolled back"]))


def insert(conn, keys, with_null):
    """Rows for `keys` (and one with a NULL key): a statement per row for a
    few, one INSERT ... SELECT for more."""
    values = [(key, "b") for key in keys] + ([(None, "null key")] if with_null else [])
    if len(values) < 3:
        for value in values:
            conn.execute("INSERT INTO gen VALUES (%s, %s)", value)
    else:
        conn.execute("INSERT INTO gen SELECT * FROM unnest(%s::int[], %s::text[])",
                     ([v[0] for v in values], [v[1] for v in values]))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps=st.lists(STEP, max_size=8), commit=st.booleans())
def test_generated_transactions_queue_exactly_the_committed_rows(owner, steps, commit):
    role, user = owner
    user.execute("DROP TABLE IF EXISTS gen CASCADE")
    user.execute("SELECT aidb.delete_pipeline(name) FROM aidb.pipelines WHERE name = 'g'")
    # A unique key that may be NULL: rows without a key have nothing to embed.
    user.execute("CREATE TABLE gen (id int UNIQUE, body text)")
    create_pipeline(user, name="g", source="gen", source_key_column="id")
    backlog = backlog_of(user, "g")
    next_key = 0
    expected = {}
    with user.transaction():
        for first, rows, with_null, kind in steps:
            keys = list(range(next_key + first * 10, next_key + first * 10 + rows))
            next_key = (keys[-1] + 1) if keys else next_key
            if kind != "plain":
                user.execute("SAVEPOINT s")
            insert(user, keys, with_null)
            if kind == "rolled back":
                user.execute("ROLLBACK TO SAVEPOINT s")
                continue
            if kind == "released":
                user.execute("RELEASE SAVEPOINT s")
            expected.update({key: 1 for key in keys})
        if not commit:
            raise psycopg.Rollback()
    assert queued(user, backlog) == (expected if commit else {})


def test_keys_of_another_type_held_for_a_pipeline_are_refused(cluster, conn, owner):
    """Only aidb attaches its capture function, but a superuser could attach
    the row trigger, for pipeline p, to a table whose key is text: the keys
    it holds must never reach p's integer backlog. The next key of p's own
    source is refused, with an error; the server stays up, nothing is queued."""
    role, user = owner
    user.execute("CREATE TABLE src (id int PRIMARY KEY, body text)")
    create_pipeline(user, source="src")
    backlog = backlog_of(user)
    pipeline_id = backlog.rsplit("_", 1)[1]
    conn.execute("CREATE TABLE public.decoy (id text, body text)")
    conn.execute("CREATE TRIGGER decoy AFTER INSERT ON public.decoy FOR EACH ROW "
                 f"EXECUTE FUNCTION aidb._capture_keys('{pipeline_id}', 'id', 'body')")
    started = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    try:
        with pytest.raises(psycopg.errors.TriggerProtocolViolated) as refused:
            with conn.transaction():
                conn.execute("INSERT INTO public.decoy VALUES ('not an integer', 'x')")
                conn.execute(f"INSERT INTO {role}.src VALUES (5, 'y')")
        assert (f"aidb pipeline {pipeline_id} captured keys of types text and integer"
                in refused.value.diag.message_primary)
    finally:
        conn.execute("DROP TABLE public.decoy")
    assert conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0] == started
    assert queued(conn, backlog) == {}


def test_sets_of_keys_are_split_and_each_key_processed_once(owner, conn):
    """A statement of 2,500 rows and one of 999 (rows of one key, below the
    set's 1,000): pipem counts the keys, not the rows; run_pipeline splits
    the set in its transaction and embeds every key once; a Background
    worker (the pipelined claim) does the same with the next statement's."""
    role, user = owner
    user.execute("CREATE TABLE src (id int PRIMARY KEY, body text)")
    create_pipeline(user, source="src")
    backlog = backlog_of(user)
    user.execute("INSERT INTO src SELECT g, 'text ' || g FROM generate_series(1, 2500) g")
    user.execute("INSERT INTO src SELECT g, 'text ' || g FROM generate_series(2501, 3499) g")
    assert backlog_rows(user, backlog) == (999, 1)
    pending = 'SELECT "table: unprocessed rows" FROM aidb.pipem WHERE pipeline = %s'
    assert user.execute(pending, ("p",)).fetchone() == (3499,)
    user.execute("SELECT aidb.run_pipeline('p')")
    assert backlog_rows(user, backlog) == (0, 0)
    destination = user.execute("SELECT destination FROM aidb.pipeline_registry "
                               "WHERE name = 'p'").fetchone()[0]
    embedded = f"SELECT count(*), count(DISTINCT source_key) FROM {destination}"
    assert user.execute(embedded).fetchone() == (3499, 3499)
    user.execute("SELECT aidb.update_pipeline('p', auto_processing => 'Background')")
    user.execute("INSERT INTO src SELECT g, 'text ' || g FROM generate_series(3500, 6000) g")
    wait_for(lambda: user.execute(embedded).fetchone() == (6000, 6000), timeout=120,
             message="the Background worker to embed the second set")
    wait_for(lambda: backlog_rows(user, backlog) == (0, 0), message="an empty backlog")


def test_malformed_sets_the_owner_writes_are_consumed(owner):
    """The pipeline's owner may add rows to its backlog (aidb grants it
    INSERT). Rows that hold no key at all, a set with NULLs, an empty set and
    keys with no source row must neither stop run_pipeline nor loop it: the
    real keys are embedded once, the rest is consumed, the backlog ends empty."""
    role, user = owner
    user.execute("CREATE TABLE src (id int PRIMARY KEY, body text)")
    create_pipeline(user, source="src")
    backlog = backlog_of(user)
    user.execute("INSERT INTO src VALUES (1, 'one'), (2, 'two')")
    user.execute(f"""INSERT INTO {backlog} (key, keys) VALUES
                     (NULL, NULL), (NULL, ARRAY[1, NULL, 2]), (NULL, '{{}}'),
                     (NULL, ARRAY[NULL, NULL]::int[]), (NULL, ARRAY[99, 2])""")
    user.execute("SELECT aidb.run_pipeline('p')")
    assert backlog_rows(user, backlog) == (0, 0)
    assert user.execute(f"SELECT count(*) FROM {backlog}").fetchone() == (0,)
    destination = user.execute("SELECT destination FROM aidb.pipeline_registry "
                               "WHERE name = 'p'").fetchone()[0]
    assert user.execute(f"SELECT array_agg(DISTINCT source_key ORDER BY source_key) "
                        f"FROM {destination}").fetchone()[0] == [1, 2]
