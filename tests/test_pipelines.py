"""Pipeline behaviour end to end: a real cluster, the real extension, the fake
OpenAI-compatible server over HTTP. After every scenario the destination is
compared with an independent recomputation from the source rows
(tests/support/pipeline_checks.py): same keys and parts, same values, same
vectors."""

import asyncio
import os
import random
import signal
import threading

import psycopg
import pytest

import aidb
from tests.support.background import wait_for_cluster
from tests.support.common import TEST_API_KEY, wait_for
from tests.support.pipeline_checks import (
    MODEL, assert_consistent, create_docs, create_fake_model, create_pipeline,
    destination_contents, destination_keys, insert_docs, metrics, pending, pipeline_errors,
    run_pipeline)
from tests.support.workers import connection_lost
from tests.support.writers import RandomWriter, numbered_docs, random_body

def run_collecting_warnings(conn, name="p"):
    """run_pipeline; returns the texts of the WARNINGs it raised."""
    warnings = []
    conn.add_notice_handler(lambda d: warnings.append(d.message_primary)
                            if d.severity_nonlocalized == "WARNING" else None)
    run_pipeline(conn, name)
    return warnings


# --- 1. concurrent runs against a random stream of changes --------------------------------

OPERATIONS = 300
TRUNCATE_AT = (110, 230)   # operations of the random stream that are TRUNCATEs


class Runner(threading.Thread):
    """run_pipeline on its own connection, `times` times or until stopped;
    counts completed runs and keeps the error that ended the loop."""

    def __init__(self, conn, times=None):
        super().__init__(daemon=True)
        self.conn, self.times, self.runs, self.error = conn, times, 0, None
        self.pid = conn.info.backend_pid
        self.stopping = threading.Event()

    def run(self):
        try:
            while not self.stopping.is_set() and self.runs != self.times:
                run_pipeline(self.conn)
                self.runs += 1
        except Exception as exc:  # noqa: BLE001 — reported by the test
            self.error = exc


def wait_for_new_runs(runners):
    """Until every runner has completed a run since now (or one failed), so
    that the writes are spread over many concurrent runs."""
    seen = [r.runs for r in runners]
    wait_for(lambda: any(r.error for r in runners) or all(r.runs > n for r, n in zip(runners, seen)),
             message="both runners to complete another run")
    errors = [r.error for r in runners if r.error]
    assert not errors, f"a concurrent run_pipeline failed: {errors[0]!r}"


@pytest.mark.smoke
@pytest.mark.slow      # hundreds of random writes beside concurrent runs
def test_concurrent_runs_during_random_changes_end_consistent(conn, connect, fake_model):
    rng = random.Random(20261122)
    create_docs(conn, [(i, random_body(rng)) for i in range(1, 61)])
    create_pipeline(conn, chunk_length=60, batch_size=7)
    writer = RandomWriter(conn, seed=7, ids=range(1, 61))
    runners = [Runner(connect()) for _ in range(2)]
    for runner in runners:
        runner.start()
    try:
        for n in range(1, OPERATIONS + 1):
            if n in TRUNCATE_AT:
                writer.truncate()
            else:
                writer.step()
            if n % 20 == 0:
                wait_for_new_runs(runners)
    finally:
        for runner in runners:
            runner.stopping.set()
            runner.join(timeout=60)
    assert [r.error for r in runners] == [None, None]
    assert all(r.runs >= 15 for r in runners)
    run_pipeline(conn)
    assert pending(conn) == 0
    assert assert_consistent(conn) > len(writer.ids) > 20   # several chunks per key


def waits_for_lock(conn, pid):
    return conn.execute("SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
                        (pid,)).fetchone()[0]


@pytest.mark.smoke
def test_truncate_while_a_run_waits_for_the_source(conn, connect, fake_model):
    """A run that touched the backlog before blocking on the source would
    deadlock with TRUNCATE, which locks the source and then (in its capture
    trigger) the backlog."""
    create_docs(conn, numbered_docs(range(1, 11)))
    create_pipeline(conn)
    truncating = connect()
    with truncating.transaction():
        truncating.execute("LOCK TABLE docs IN ACCESS EXCLUSIVE MODE")
        runner = Runner(connect(), times=1)
        runner.start()
        wait_for(lambda: waits_for_lock(conn, runner.pid), message="the run to wait for the source")
        truncating.execute("TRUNCATE docs")
    runner.join(timeout=30)
    assert (runner.runs, runner.error) == (1, None)
    insert_docs(conn, numbered_docs(range(11, 16)))
    run_pipeline(conn)
    assert assert_consistent(conn) == 5


# --- 2. a run killed in the provider call ------------------------------------------------

def in_provider_call(conn, pid, model_server):
    """The backend runs run_pipeline and the server holds its request."""
    active = conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
                          "AND query LIKE '%%run_pipeline%%'", (pid,)).fetchone()
    return active and model_server.state()["in_flight"] >= 1


def start_run_that_hangs(connect, model_server):
    """A Runner whose first batch is answered (slowly), then the provider hangs."""
    requests_before = model_server.state()["requests_total"]
    model_server.set_latency(200)
    runner = Runner(connect(), times=1)
    runner.start()
    wait_for(lambda: model_server.state()["requests_total"] > requests_before,
             message="the first batch to reach the provider")
    model_server.set_fault("hang")
    return runner


@pytest.mark.slow      # SIGKILL restarts the whole cluster
@pytest.mark.parametrize("kill", ["pg_terminate_backend", "SIGKILL"])
def test_run_killed_mid_batch_loses_no_key(conn, connect, cluster, dbname, fake_model, kill):
    create_docs(conn, numbered_docs(range(1, 41)))
    create_pipeline(conn, batch_size=10)
    run_pipeline(conn)
    conn.execute("UPDATE docs SET body = body || ' (revised)' WHERE id <= 10")
    conn.execute("DELETE FROM docs WHERE id BETWEEN 11 AND 15")
    insert_docs(conn, numbered_docs(range(41, 61), prefix="new"))
    assert pending(conn) == 35
    runner = start_run_that_hangs(connect, fake_model)
    wait_for(lambda: in_provider_call(conn, runner.pid, fake_model),
             message="the run to hang in the provider")
    if kill == "SIGKILL":
        os.kill(runner.pid, signal.SIGKILL)    # the postmaster resets the whole cluster
    else:
        conn.execute("SELECT pg_terminate_backend(%s)", (runner.pid,))
    runner.join(timeout=60)
    assert isinstance(runner.error, psycopg.OperationalError), runner.error
    fake_model.reset()
    if kill == "SIGKILL":
        # Reconnect only after the crash restart has ended our own session:
        # a connection made before it would be killed with the rest.
        wait_for(lambda: connection_lost(conn), message="the crash restart to end our session")
    with wait_for_cluster(cluster, dbname) as fresh:
        # Batches the killed run had finished were rolled back with it.
        assert pending(fresh) == 35
        assert destination_keys(fresh) == set(range(1, 11)) | set(range(16, 41))
        run_pipeline(fresh)
        assert pending(fresh) == 0
        assert assert_consistent(fresh) == 55


# --- 3. one poisoned record ----------------------------------------------------------------

def test_poisoned_record_is_isolated_then_recovers(conn, fake_model):
    rows = numbered_docs(range(1, 301))
    rows[136] = (137, "this record carries POISON for the provider")
    create_docs(conn, rows)
    create_pipeline(conn, batch_size=100)
    run_pipeline(conn)
    assert [(k, c) for k, c, _ in pipeline_errors(conn)] == [("137", "RecordPermanent")]
    row = metrics(conn)
    assert (row["Status"], row["count(record errors)"], row["table: unprocessed rows"]) \
        == ("PartialErrors", 1, 0)
    assert assert_consistent(conn, except_keys={137}) == 299
    conn.execute("UPDATE docs SET body = 'this record is clean now' WHERE id = 137")
    run_pipeline(conn)
    assert pipeline_errors(conn) == []
    assert metrics(conn)["Status"] == "UpToDate"
    assert assert_consistent(conn) == 300


# --- 4. provider outage and rejected credentials -------------------------------------------

def test_provider_outage_keeps_backlog_until_it_ends(conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 51)))
    create_pipeline(conn, batch_size=20)
    fake_model.set_fault("http500")
    warnings = run_collecting_warnings(conn)
    assert any('pipeline "p" stopped' in w for w in warnings), warnings
    assert pending(conn) == 50
    assert destination_contents(conn) == {}
    assert metrics(conn)["Status"] == "Failed"
    assert [(k, c) for k, c, _ in pipeline_errors(conn)] == [(None, "PipelineTemporary")]
    fake_model.set_fault("none")
    run_pipeline(conn)
    assert pipeline_errors(conn) == []
    assert metrics(conn)["Status"] == "UpToDate"
    assert assert_consistent(conn) == 50


def test_rejected_credentials_block_until_replaced(conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 21)))
    create_pipeline(conn)
    run_pipeline(conn)
    wrong_key = "sk-wrong-key-9876543210"
    create_fake_model(conn, fake_model.url, wrong_key, replace_credentials=True)
    insert_docs(conn, numbered_docs(range(21, 31)))
    warnings = run_collecting_warnings(conn)
    assert any("credentials" in w for w in warnings), warnings
    [(key, category, message)] = pipeline_errors(conn)
    assert (key, category) == (None, "PipelinePermanent")
    assert wrong_key not in message and all(wrong_key not in w for w in warnings)
    row = metrics(conn)
    assert (row["Status"], row["count(blocking errors)"], row["table: unprocessed rows"]) \
        == ("BlockingErrors", 1, 10)
    create_fake_model(conn, fake_model.url, TEST_API_KEY, replace_credentials=True)
    conn.execute("SELECT aidb.retry_pipeline_errors('p')")
    run_pipeline(conn)
    assert pipeline_errors(conn) == []
    assert metrics(conn)["Status"] == "UpToDate"
    assert assert_consistent(conn) == 30


# --- 5. source_filter ------------------------------------------------------------------------

def test_source_filter_follows_rows_in_and_out(conn, fake_model):
    create_docs(conn, [(i, body, "2026-01-01" if i % 2 == 0 else None)
                       for i, body in numbered_docs(range(1, 21))])
    create_pipeline(conn, source_filter="published_time IS NOT NULL")
    run_pipeline(conn)
    assert destination_keys(conn) == set(range(2, 21, 2))
    assert_consistent(conn)
    conn.execute("UPDATE docs SET published_time = now() WHERE id = 3")
    conn.execute("UPDATE docs SET published_time = NULL WHERE id = 4")
    run_pipeline(conn)
    assert destination_keys(conn) == set(range(2, 21, 2)) - {4} | {3}
    assert_consistent(conn)


def test_source_filter_with_a_percent_sign(cluster, dbname, conn, fake_model):
    # Engine SQL uses %s placeholders, so a literal % in the filter must reach
    # the server intact through both adapters' placeholder rewriting.
    create_docs(conn, [(1, "draft: not yet"), (2, "100% done"), (3, "final text")])
    conn.execute("SELECT aidb.create_pipeline('p', 'docs', source_data_column => 'body', "
                 "step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config(%s), "
                 "source_filter => %s)", (MODEL, "body NOT LIKE 'draft%' AND body <> '50%'"))
    run_pipeline(conn)                                          # plpy
    assert destination_keys(conn) == {2, 3}
    insert_docs(conn, [(4, "draft again"), (5, "another final")])
    worker = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], once=True)   # psycopg
    assert asyncio.run(worker.run()) == 0
    assert destination_keys(conn) == {2, 3, 5}
    assert_consistent(conn)


# --- 6. view sources -------------------------------------------------------------------------

def test_view_source_is_reconciled_by_content(conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 21)))
    conn.execute("CREATE VIEW v AS SELECT id, body FROM docs WHERE body NOT LIKE 'draft%'")
    create_pipeline(conn, source="v", source_key_column="id")
    run_pipeline(conn)
    assert assert_consistent(conn) == 20
    insert_docs(conn, numbered_docs([21, 22], prefix="fresh") + [(23, "draft, not shown")])
    conn.execute("UPDATE docs SET body = 'rewritten ' || body WHERE id IN (1, 2)")
    conn.execute("UPDATE docs SET body = 'draft again' WHERE id = 3")
    conn.execute("DELETE FROM docs WHERE id IN (4, 5)")
    run_pipeline(conn)
    assert destination_keys(conn) == set(range(1, 23)) - {3, 4, 5}
    assert assert_consistent(conn) == 19


# --- 7. reconcile_pipeline -------------------------------------------------------------------

def test_reconcile_finds_changes_made_without_triggers(conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 31)))
    create_pipeline(conn)
    run_pipeline(conn)
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")   # no triggers fire
        insert_docs(conn, numbered_docs(range(31, 34), prefix="unseen"))        # 3 drifted
        conn.execute("UPDATE docs SET body = body || ' edited' WHERE id IN (1, 2)")  # 2
        conn.execute("UPDATE docs SET body = body WHERE id = 3")                # same content: 0
        conn.execute("DELETE FROM docs WHERE id IN (4, 5)")                     # 2
        conn.execute("UPDATE docs SET id = 110 WHERE id = 10")                  # old and new: 2
    assert pending(conn) == 0
    assert conn.execute("SELECT aidb.reconcile_pipeline('p')").fetchone()[0] == 9
    assert pending(conn) == 9
    run_pipeline(conn)
    assert assert_consistent(conn) == 31
    assert conn.execute("SELECT aidb.reconcile_pipeline('p')").fetchone()[0] == 0


# --- 8. Live mode ------------------------------------------------------------------------------

@pytest.mark.smoke
def test_live_mode_embeds_inside_the_statement(conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 6)))
    create_pipeline(conn, auto_processing="Live")
    assert assert_consistent(conn) == 5
    with conn.transaction():
        insert_docs(conn, [(6, "written and embedded at once")])
        assert 6 in destination_keys(conn)   # before the commit, in the same transaction
    fake_model.set_fault("http500")
    with pytest.raises(psycopg.Error, match='pipeline "p"'):
        insert_docs(conn, [(7, "the provider is down")])
    fake_model.set_fault("none")
    assert conn.execute("SELECT count(*) FROM docs WHERE id = 7").fetchone()[0] == 0
    assert pending(conn) == 0
    assert assert_consistent(conn) == 6


# --- 9. updates of other columns ------------------------------------------------------------

@pytest.mark.smoke
def test_unrelated_column_updates_cost_nothing(conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 21)))
    create_pipeline(conn)
    run_pipeline(conn)
    requests_before = fake_model.state()["requests_total"]
    conn.execute("UPDATE docs SET published_time = now()")
    assert pending(conn) == 0
    run_pipeline(conn)
    assert fake_model.state()["requests_total"] == requests_before
    # The control: a change of the data column costs exactly one request.
    conn.execute("UPDATE docs SET body = body || '!' WHERE id = 1")
    assert pending(conn) == 1
    run_pipeline(conn)
    assert fake_model.state()["requests_total"] == requests_before + 1
    assert assert_consistent(conn) == 20
