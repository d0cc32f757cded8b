"""Keys the source holds but the destination refuses (#13, item 3): each is
recorded as RecordPermanent in aidb.pipeline_errors, and every other key of
its batch is processed; the batch never fails, so no key waits behind it.

Two real refusals: a CHECK constraint the pipeline owner put on the
destination, and a text key that fits the source's unique index but not
the destination's primary key (source_key, part_id), which is a few bytes
wider.
"""

import base64
import os

import psycopg
import pytest

from tests.support.workers import drained, metrics
from tests.support.common import wait_for

STEPS = "step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(40)"


def create_pipeline(conn, key_type="int", batch_size=100, rows=()):
    conn.execute(f"CREATE TABLE docs (id {key_type} PRIMARY KEY, body text)")
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO docs VALUES (%s, %s)", rows)
    conn.execute("SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', "
                 f"batch_size => %s, {STEPS})", (batch_size,))


def destination_keys(conn):
    return {k for (k,) in conn.execute("SELECT DISTINCT source_key FROM p_embeddings")}


def errors(conn):
    return {key: (category, step, message) for key, category, step, message in conn.execute(
        "SELECT source_key, category, step, message FROM aidb.pipeline_errors WHERE pipeline = 'p'")}


@pytest.fixture
def quiet(conn):
    conn.execute("SET client_min_messages = warning")
    return conn


def test_values_a_destination_check_refuses_are_recorded_and_the_rest_is_written(quiet):
    bad = {7, 93, 94, 150, 299}
    create_pipeline(quiet, rows=[(i, "forbidden words" if i in bad else f"body {i}")
                                 for i in range(1, 301)])
    quiet.execute("ALTER TABLE p_embeddings ADD CONSTRAINT no_forbidden "
                  "CHECK (value NOT LIKE '%forbidden%')")
    quiet.execute("SELECT aidb.run_pipeline('p')")
    assert destination_keys(quiet) == set(range(1, 301)) - bad
    found = errors(quiet)
    assert set(found) == {str(k) for k in bad}
    for category, step, message in found.values():
        assert (category, step) == ("RecordPermanent", "write")
        assert "no_forbidden" in message and "retry_pipeline_errors" in message, message
    row = metrics(quiet, "p")
    assert row["table: unprocessed rows"] == 0 and row["count(record errors)"] == len(bad)

    # Running again finds nothing to do; fixing a row clears its error.
    quiet.execute("SELECT aidb.run_pipeline('p')")
    assert destination_keys(quiet) == set(range(1, 301)) - bad
    quiet.execute("UPDATE docs SET body = 'fine now' WHERE id = 93")
    quiet.execute("SELECT aidb.run_pipeline('p')")
    assert 93 in destination_keys(quiet) and "93" not in errors(quiet)
    assert set(errors(quiet)) == {str(k) for k in bad - {93}}


def test_a_refused_changed_key_loses_its_old_rows(quiet):
    """A key whose new content is refused keeps no rows of its old content."""
    create_pipeline(quiet, rows=[(1, "good"), (2, "good too")])
    quiet.execute("SELECT aidb.run_pipeline('p')")
    quiet.execute("ALTER TABLE p_embeddings ADD CONSTRAINT no_forbidden "
                  "CHECK (value NOT LIKE '%forbidden%')")
    quiet.execute("UPDATE docs SET body = 'forbidden now' WHERE id = 1")
    quiet.execute("SELECT aidb.run_pipeline('p')")
    assert destination_keys(quiet) == {2}
    assert errors(quiet)["1"][0] == "RecordPermanent"


def longest_source_key(conn, prefix):
    """The longest incompressible text key that the source's own unique
    index accepts (found by trying: the limit depends on alignment)."""
    for length in range(2720, 2600, -1):
        key = prefix + base64.b64encode(os.urandom(length)).decode()[:length - len(prefix)]
        try:
            with conn.transaction():
                conn.execute("INSERT INTO docs VALUES (%s, 'a long key''s body')", (key,))
            return key
        except psycopg.errors.ProgramLimitExceeded:
            continue
    raise AssertionError("no key length between 2600 and 2720 fits the source's index")


@pytest.mark.parametrize("background", [False, True], ids=["run_pipeline", "worker"])
def test_a_key_too_long_for_the_destination_index_is_recorded(quiet, background):
    create_pipeline(quiet, key_type="text", batch_size=10,
                    rows=[(f"k{i:03}", f"body {i}") for i in range(25)])
    long_key = longest_source_key(quiet, "k005~")   # claimed among the first keys
    quiet.execute("INSERT INTO docs SELECT 'k' || g, 'late ' || g FROM generate_series(100, 120) g")
    if background:
        quiet.execute("SELECT aidb.update_pipeline('p', 'Background')")
        wait_for(lambda: metrics(quiet, "p")["table: unprocessed rows"] == 0, timeout=60,
                 message="the worker to drain the backlog")
        assert metrics(quiet, "p")["Status"] in ("PartialErrors",), metrics(quiet, "p")
    else:
        quiet.execute("SELECT aidb.run_pipeline('p')")
    expected = {f"k{i:03}" for i in range(25)} | {f"k{g}" for g in range(100, 121)}
    assert destination_keys(quiet) == expected
    found = errors(quiet)
    assert list(found) == [long_key]
    category, step, message = found[long_key]
    assert (category, step) == ("RecordPermanent", "write") and "index row size" in message, message
