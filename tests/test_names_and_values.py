"""Names and values: identifiers of any shape work through PL/Python
(run_pipeline), the background worker and the external worker; NULL names
and out-of-range settings are refused with errors that say which argument
and what to do.

The sources have odd names for their schema, table and every column
(quotes, %, %s, {}, $1, unicode, spaces, 63 bytes), and odd keys; the
destination is compared with an independent recomputation from the source
(tests/support/generated_sources.py). The pipelines are ChunkText-only, so
no model server is needed.
"""

import os
import subprocess
import sys

import psycopg
import pytest
from psycopg import sql

from tests.support.common import scratch_database, wait_for
from tests.support.generated_sources import (
    KEY_TYPES, Source, assert_destination_matches, create_chunk_pipeline, create_source)
from tests.support.workers import drained, metrics

AIDB = os.path.join(os.path.dirname(sys.executable), "aidb")   # the venv's console script

# (schema, table, key column, data column, flag column, note column)
ODD_NAMES = [
    ("pct%s", "sale%", "id{x}", "da$1ta", "%s", "{}"),
    ('it\'s "quoted"', "with space", "$1", "%%", "%I", "a.b"),
    ("Ünïcødé 中文", "😀", "é" * 31 + "x", "x" * 63, "{x}", "%L"),
]
KEYS = ["plain", "it's", '"dq"', "%s", "%%", "{x}", "$1", "\\", "é", "😀 emoji", "x" * 2000, ""]


def odd_source(names, kind="table", key_type="text"):
    schema, table, key, data, flag, note = names
    return Source(schema=schema, table=table, kind=kind, relation=table, key=key, data=data,
                  flag=flag, note=note, key_type=KEY_TYPES[key_type], with_filter=True)


def fill(conn, source, keys=KEYS):
    rows = sql.SQL(", ").join(
        sql.SQL("({}, {}, {})").format(sql.Literal(k), sql.Literal(f"body of {k[:20]} with %s and {{x}}"),
                                       sql.Literal(i % 3 != 0 or None))
        for i, k in enumerate(keys))
    conn.execute(sql.SQL("INSERT INTO {} ({}, {}, {}) VALUES ").format(
        source.base, *map(sql.Identifier, (source.key, source.data, source.flag))) + rows)


def change(conn, source):
    """An update of some data, a key change, a delete: all captured."""
    key, data = sql.Identifier(source.key), sql.Identifier(source.data)
    conn.execute(sql.SQL("UPDATE {} SET {} = {} || ' changed' WHERE {} IN ('plain', '%s')").format(
        source.base, data, data, key))
    conn.execute(sql.SQL("UPDATE {} SET {} = 'moved {{x}}' WHERE {} = '$1'").format(source.base, key, key))
    conn.execute(sql.SQL("DELETE FROM {} WHERE {} = '\\'").format(source.base, key))


@pytest.fixture
def quiet(conn):
    conn.execute("SET client_min_messages = warning")
    return conn


@pytest.mark.parametrize("names", ODD_NAMES, ids=["pct", "quotes", "unicode63"])
def test_odd_names_through_run_pipeline(quiet, names):
    source = odd_source(names)
    create_source(quiet, source)
    fill(quiet, source)
    create_chunk_pipeline(quiet, "names_p", source, 12)
    quiet.execute("SELECT aidb.run_pipeline('names_p')")
    assert assert_destination_matches(quiet, "names_p", source, "first run") > len(KEYS)
    change(quiet, source)
    quiet.execute("SELECT aidb.run_pipeline('names_p')")
    assert assert_destination_matches(quiet, "names_p", source, "after changes") > len(KEYS)
    assert metrics(quiet, "names_p")["table: unprocessed rows"] == 0


@pytest.mark.parametrize("names", ODD_NAMES[:2], ids=["pct", "quotes"])
def test_odd_names_through_the_background_worker(quiet, names):
    source = odd_source(names)
    create_source(quiet, source)
    fill(quiet, source)
    create_chunk_pipeline(quiet, "names_bg", source, 12)
    quiet.execute("SELECT aidb.update_pipeline('names_bg', 'Background')")
    wait_for(lambda: drained(quiet, "names_bg"), timeout=60, message="the worker to drain")
    assert_destination_matches(quiet, "names_bg", source, "backfill by the worker")
    change(quiet, source)
    wait_for(lambda: drained(quiet, "names_bg"), timeout=60, message="the worker to catch up")
    assert assert_destination_matches(quiet, "names_bg", source, "changes by the worker") > len(KEYS)
    assert quiet.execute("SELECT count(*) FROM aidb.pipeline_errors WHERE pipeline = 'names_bg'"
                         ).fetchone()[0] == 0


@pytest.mark.parametrize("names", ODD_NAMES, ids=["pct", "quotes", "unicode63"])
def test_odd_names_through_the_external_worker(cluster, dbname, quiet, names, tmp_path):
    source = odd_source(names, kind="partitioned" if names is ODD_NAMES[2] else "table")
    create_source(quiet, source)
    fill(quiet, source)
    create_chunk_pipeline(quiet, "names_ext", source, 12)     # Disabled: only -i serves it
    change(quiet, source)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIDB_WORKER_")}
    result = subprocess.run([AIDB, "worker", "-d", cluster.dsn(dbname), "-i", "names_ext", "--once"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "Error" not in result.stderr, result.stderr
    assert metrics(quiet, "names_ext")["table: unprocessed rows"] == 0
    assert assert_destination_matches(quiet, "names_ext", source, "external worker") > len(KEYS)


# --- NULL names and values out of range ---------------------------------------------------------

NULL_CALLS = [
    ("SELECT aidb.run_pipeline(NULL)", "pipeline name must not be NULL"),
    ("SELECT aidb.delete_pipeline(NULL)", "pipeline name must not be NULL"),
    ("SELECT aidb.update_pipeline(NULL, 'Background')", "pipeline name must not be NULL"),
    ("SELECT aidb.reconcile_pipeline(NULL)", "pipeline name must not be NULL"),
    ("SELECT aidb.create_pipeline(name => NULL, source => 'docs')", "name must not be NULL"),
    ("SELECT aidb.create_pipeline(name => 'n', source => NULL)", "source must not be NULL"),
    ("SELECT aidb.create_model(NULL, 'openai_embeddings')", "model name must not be NULL"),
    ("SELECT aidb.create_model('m', NULL)", "model provider must not be NULL"),
    ("SELECT aidb.encode_text(NULL, 'text')", "model name must not be NULL"),
    ("SELECT aidb.encode_text_batch(NULL, ARRAY['text'])", "model name must not be NULL"),
    ("SELECT aidb.create_volume(NULL, 'file:///tmp')", "volume name must not be NULL"),
    ("SELECT * FROM aidb.list_volume(NULL)", "volume name must not be NULL"),
    ("SELECT aidb.delete_volume(NULL)", "volume name must not be NULL"),
    ("SELECT aidb.delete_model(NULL)", "model name must not be NULL"),
    ("SELECT aidb.retry_pipeline_errors(NULL)", "pipeline name must not be NULL"),
    ("SELECT aidb.clear_pipeline_errors(NULL)", "pipeline name must not be NULL"),
]


@pytest.fixture(scope="module")
def refusing_conn(cluster):
    """One session for the calls that are all refused (changing nothing):
    each new backend would load the engine anew."""
    with scratch_database(cluster, "t_null_", template="aidb_template") as name:
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            conn.execute("SET client_min_messages = warning")
            yield conn


@pytest.mark.parametrize("statement,message", NULL_CALLS, ids=[s for s, _ in NULL_CALLS])
def test_null_names_are_refused_by_name(refusing_conn, statement, message):
    with pytest.raises(psycopg.Error) as raised:
        refusing_conn.execute(statement)
    error = raised.value.diag.message_primary
    assert message in error, error
    assert "None" not in error and "<NULL>" not in error and "internal error" not in error, error


def test_a_timeout_out_of_range_is_refused_with_the_range(quiet):
    for timeout in (1e308, 3601, 10**30):
        with pytest.raises(psycopg.Error) as raised:
            quiet.execute("SELECT aidb.create_model('slow', 'openai_embeddings', jsonb_build_object("
                          "'model', 'm', 'url', 'http://127.0.0.1:9/v1', 'timeout', %s::numeric))",
                          (str(timeout),))
        error = raised.value.diag.message_primary
        assert '"timeout"' in error and "at most 3600" in error, error
    quiet.execute("SELECT aidb.create_model('slow', 'openai_embeddings', "
                  "'{\"model\": \"m\", \"url\": \"http://127.0.0.1:9/v1\", \"timeout\": 3600}')")
    assert quiet.execute("SELECT config->>'timeout' FROM aidb.models WHERE name = 'slow'"
                         ).fetchone()[0] == "3600"


def test_an_empty_key_column_name_is_an_error_not_the_primary_key(quiet):
    quiet.execute("CREATE TABLE docs (id int PRIMARY KEY, other int UNIQUE, body text)")
    with pytest.raises(psycopg.Error) as raised:
        quiet.execute("SELECT aidb.create_pipeline('p', 'docs', source_key_column => '', "
                      "source_data_column => 'body', step_1 => 'ChunkText', "
                      "step_1_options => aidb.chunk_text_config(10))")
    assert "source_key_column" in raised.value.diag.message_primary
    assert quiet.execute("SELECT count(*) FROM aidb.pipelines").fetchone()[0] == 0
    # NULL (or no argument) still means the primary key.
    quiet.execute("SELECT aidb.create_pipeline('p', 'docs', source_key_column => NULL, "
                  "source_data_column => 'body', step_1 => 'ChunkText', "
                  "step_1_options => aidb.chunk_text_config(10))")
    assert quiet.execute("SELECT source_key_column FROM aidb.pipelines").fetchone()[0] == "id"


def test_null_keys_in_a_unique_column_never_fail_the_application(quiet):
    """INSERT, UPDATE (to and from NULL, and of data), DELETE and TRUNCATE of
    rows with NULL keys go through the capture triggers (C fast path and
    PL/pgSQL) without error, and NULL keys have no destination rows."""
    source = odd_source(ODD_NAMES[0])
    create_source(quiet, source)
    create_chunk_pipeline(quiet, "nulls", source, 10)
    t, k, d = source.base, sql.Identifier(source.key), sql.Identifier(source.data)
    for statement in [
        sql.SQL("INSERT INTO {} ({}, {}) VALUES (NULL, 'a b'), (NULL, 'c d'), ('k1', 'e f')").format(t, k, d),
        sql.SQL("UPDATE {} SET {} = {} || ' x' WHERE {} IS NULL").format(t, d, d, k),
        sql.SQL("UPDATE {} SET {} = NULL WHERE {} = 'k1'").format(t, k, k),
        sql.SQL("UPDATE {} SET {} = 'k2' WHERE {} IS NULL AND {} = 'a b x'").format(t, k, k, d),
        sql.SQL("DELETE FROM {} WHERE {} IS NULL AND {} = 'c d x'").format(t, k, d),
        sql.SQL("COPY {} ({}, {}) FROM STDIN").format(t, k, d),
    ]:
        if b"COPY" in statement.as_bytes(quiet):
            with quiet.cursor().copy(statement) as copy:
                copy.write_row((None, "copied"))
        else:
            quiet.execute(statement)
    quiet.execute("SELECT aidb.run_pipeline('nulls')")
    assert assert_destination_matches(quiet, "nulls", source, "with NULL keys") > 0
    assert metrics(quiet, "nulls")["null keys"] >= 2
    quiet.execute(sql.SQL("TRUNCATE {}").format(t))
    quiet.execute("SELECT aidb.run_pipeline('nulls')")
    assert assert_destination_matches(quiet, "nulls", source, "after TRUNCATE") == 0
