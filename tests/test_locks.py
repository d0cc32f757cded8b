"""What a batch holds while the model works, and what it does when someone
else holds what it needs (docs/architecture.md, "The batch protocol"): no
lock on the source during a model call, no waiting behind DDL, no stall
behind an idle transaction."""

import psycopg
import pytest

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.pipeline_checks import (
    assert_consistent, create_docs, create_fake_model, create_pipeline, insert_docs, metrics,
    pipeline_errors)

pytestmark = pytest.mark.workers


@pytest.fixture
def fake_model(conn, model_server):
    create_fake_model(conn, model_server.url, TEST_API_KEY)


def in_model_call(model_server):
    return model_server.state()["in_flight"] >= 1


def test_ddl_and_readers_never_wait_for_a_model_call(conn, connect, model_server, fake_model):
    create_docs(conn, [(1, "one")])
    create_pipeline(conn, auto_processing="Background")
    wait_for(lambda: metrics(conn)["Status"] == "UpToDate", message="the backfill")
    model_server.set_latency(4000)
    insert_docs(conn, [(2, "two")])
    wait_for(lambda: in_model_call(model_server), message="a batch in its model call")
    ddl = connect()
    ddl.execute("SET lock_timeout = '1s'")
    ddl.execute("ALTER TABLE docs ADD COLUMN tags text")     # would time out behind a lock
    assert connect().execute("SELECT count(*) FROM docs").fetchone()[0] == 2
    assert in_model_call(model_server), "the batch ended before the DDL ran: nothing was shown"
    model_server.set_latency(0)
    wait_for(lambda: metrics(conn)["Status"] == "UpToDate", message="the batch to finish")
    assert assert_consistent(conn) == 2


def test_a_worker_does_not_queue_behind_ddl(conn, connect, model_server, fake_model):
    create_docs(conn, [(1, "one")])
    create_pipeline(conn, auto_processing="Background")
    wait_for(lambda: metrics(conn)["Status"] == "UpToDate", message="the backfill")
    conn.execute("ALTER TABLE docs DISABLE TRIGGER USER")
    insert_docs(conn, [(2, "two")])
    conn.execute("ALTER TABLE docs ENABLE TRIGGER USER")
    ddl = connect()
    with ddl.transaction():
        ddl.execute("LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
        # Key 2 queued while DDL holds the source: the worker's batch gives
        # up on the source at once, says so, and backs off.
        backlog = conn.execute("SELECT format('aidb.%I', '_backlog_' || id) "
                               "FROM aidb.pipeline_registry WHERE name = 'p'").fetchone()[0]
        conn.execute(f"INSERT INTO {backlog} (key) VALUES (2)")
        conn.execute("SELECT aidb._wake_pipeline(id, urgent => true) FROM aidb.pipeline_registry")
        wait_for(lambda: "read" in _error_steps(conn), message="the batch to report the busy source")
        [(key, category, message)] = pipeline_errors(conn)
        assert (key, category) == (None, "PipelineTemporary")
        assert "locked by another transaction" in message
        # Monitoring answers meanwhile (the source's count is NULL for now).
        row = metrics(conn)
        assert (row["Status"], row["count(source records)"]) == ("Failed", None)
    wait_for(lambda: metrics(conn)["Status"] == "UpToDate", timeout=60,
             message="the worker to catch up once the DDL is over")
    assert assert_consistent(conn) == 2


def _error_steps(conn):
    return [row[0] for row in conn.execute(
        "SELECT step FROM aidb.pipeline_errors WHERE pipeline = 'p'")]


def test_an_idle_transaction_holds_back_only_its_own_key(conn, connect, model_server, fake_model):
    create_docs(conn, [(n, f"doc {n}") for n in range(1, 6)])
    create_pipeline(conn, batch_size=10)
    conn.execute("SELECT aidb.run_pipeline('p')")
    conn.execute("UPDATE docs SET body = body || '!'")      # every key queued again
    idle = connect()
    idle.execute("BEGIN")
    idle.execute("DELETE FROM docs WHERE id = 3")           # holds key 3's destination rows
    conn.execute("SELECT aidb.run_pipeline('p')")           # returns: it does not wait
    values = dict(conn.execute("SELECT source_key, value FROM p_embeddings"))
    assert {k: v for k, v in values.items() if k != 3} == {1: "doc 1!", 2: "doc 2!",
                                                          4: "doc 4!", 5: "doc 5!"}
    [(key, category, message)] = pipeline_errors(conn)
    assert (key, category) == ("3", "RecordTemporary")
    assert "locked by another open transaction" in message
    idle.execute("COMMIT")
    conn.execute("SELECT aidb.run_pipeline('p')")
    assert assert_consistent(conn) == 4
    assert pipeline_errors(conn) == []
