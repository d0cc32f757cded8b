"""Background workers under stress: killed, cancelled, restarted with the
server, starved of worker slots, facing a provider outage, recycled for
memory. A real cluster that preloads aidb, the fake OpenAI-compatible server
over HTTP; after each scenario the destination is compared with an
independent recomputation from the source rows (pipeline_checks)."""

import os
import signal
import threading
import time

import psycopg
import pytest

from conftest import TEST_API_KEY, wait_for
from test_pipelines import numbered_docs, wait_for_cluster
from tests.support.pipeline_checks import (
    MODEL, assert_consistent, create_docs, create_fake_model, create_pipeline, insert_docs,
    metrics, pending, pipeline_errors)
from tests.support.workers import (
    BACKING_OFF, activity_pid, connection_lost, drained, running_worker, set_model_config)

pytestmark = pytest.mark.workers

DRAIN_TIMEOUT = 60


@pytest.fixture
def fake_model(conn, model_server):
    """The fake server's model, giving up fast (one retry, 2 s timeout): a
    failing batch ends within seconds and the worker backs off."""
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    set_model_config(conn, MODEL, max_retries=1, timeout=2)
    return model_server


def background_pipeline(conn, name="p", **options):
    """A Background pipeline over docs; returns its worker's pid once it runs."""
    create_pipeline(conn, name, auto_processing="Background", **options)
    return wait_for(lambda: running_worker(conn, name), message=f"the worker of {name}")


def wait_drained(conn, name="p"):
    wait_for(lambda: drained(conn, name), timeout=DRAIN_TIMEOUT, message=f"{name} to drain")


def fill_docs(conn, count):
    """docs with `count` rows, written in one statement (one backlog wake-up)."""
    create_docs(conn)
    conn.execute("INSERT INTO docs (id, body) SELECT g, 'document ' || g || ' of the backfill' "
                 "FROM generate_series(1, %s) g", (count,))


def destination_count(conn, name="p"):
    return metrics(conn, name)["count(destination records)"]


# --- 1. SIGTERM ------------------------------------------------------------------------------

def test_terminated_worker_is_replaced(conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 21)))
    first = background_pipeline(conn)
    wait_drained(conn)
    conn.execute("SELECT pg_terminate_backend(%s)", (first,))
    second = wait_for(lambda: running_worker(conn, other_than=first), timeout=10,
                      message="a new worker")
    assert second != first
    insert_docs(conn, numbered_docs(range(21, 41), prefix="later"))
    wait_drained(conn)
    assert running_worker(conn) == second
    assert assert_consistent(conn) == 40


# --- 2. SIGKILL: the postmaster resets the whole cluster ---------------------------------------

PIPELINES = ("p1", "p2", "p3")


def test_killed_worker_crash_restart_loses_no_key(cluster, dbname, conn, fake_model):
    fill_docs(conn, 600)
    fake_model.set_latency(100)     # so that the kill lands mid-backfill
    pids = {name: background_pipeline(conn, name, batch_size=20) for name in PIPELINES}
    wait_for(lambda: destination_count(conn, "p1") > 0, message="p1's first batch")
    assert pending(conn, "p1") > 0
    log_start = len(cluster.log_text())
    os.kill(pids["p1"], signal.SIGKILL)
    wait_for(lambda: connection_lost(conn), message="the crash restart to end our session")
    with wait_for_cluster(cluster, dbname) as fresh:
        assert "terminated by signal 9" in cluster.log_text()[log_start:]
        new_pids = {name: wait_for(lambda: running_worker(fresh, name), timeout=30,
                                   message=f"{name}'s worker after the crash")
                    for name in PIPELINES}
        assert not set(new_pids.values()) & set(pids.values())
        fake_model.set_latency(0)
        for name in PIPELINES:
            wait_drained(fresh, name)
            assert assert_consistent(fresh, name) == 600


# --- 3. server restart in the middle of a backfill ----------------------------------------------

def test_server_restart_mid_backfill(cluster, dbname, conn, fake_model):
    fill_docs(conn, 3000)
    fake_model.set_latency(200)     # ~60 batches of 50: about 15 s of backfill
    background_pipeline(conn, batch_size=50)
    wait_for(lambda: destination_count(conn) >= 200, message="part of the backfill")
    cluster.restart()
    fake_model.set_latency(0)
    with wait_for_cluster(cluster, dbname) as fresh:
        done_before = destination_count(fresh)
        assert 0 < done_before < 3000 and pending(fresh) == 3000 - done_before
        wait_for(lambda: running_worker(fresh), message="the worker after the restart")
        wait_drained(fresh)
        assert assert_consistent(fresh) == 3000


# --- 4. provider outage during steady writes ------------------------------------------------------

class SteadyWriter(threading.Thread):
    """Inserts one docs row every `interval` seconds on its own connection
    (at most `limit` rows), timing each autocommit INSERT."""

    def __init__(self, conn, first_id, interval=0.05, limit=2000):
        super().__init__(daemon=True)
        self.conn, self.next_id, self.interval, self.limit = conn, first_id, interval, limit
        self.first_id, self.seconds, self.error = first_id, [], None
        self.stopping = threading.Event()

    def run(self):
        try:
            while not self.stopping.is_set() and len(self.seconds) < self.limit:
                started = time.perf_counter()
                insert_docs(self.conn, [(self.next_id, f"written during the outage {self.next_id}")])
                self.seconds.append(time.perf_counter() - started)
                self.next_id += 1
                self.stopping.wait(self.interval)
        except Exception as exc:  # noqa: BLE001 — reported by the test
            self.error = exc

    def stop(self):
        self.stopping.set()
        self.join(timeout=30)
        assert self.error is None, f"an insert failed: {self.error!r}"
        return set(range(self.first_id, self.next_id))


def error_attempts(conn, name="p"):
    row = conn.execute("SELECT attempts FROM aidb.pipeline_errors WHERE pipeline = %s "
                       "AND source_key IS NULL", (name,)).fetchone()
    return row and row[0]


def test_provider_outage_holds_backlog_without_slowing_writes(conn, connect, fake_model):
    create_docs(conn, numbered_docs(range(1, 21)))
    worker = background_pipeline(conn)
    wait_drained(conn)
    fake_model.set_fault("http500")
    writer = SteadyWriter(connect(), first_id=1000)
    writer.start()
    try:
        wait_for(lambda: metrics(conn)["Status"] == "Failed"
                 and metrics(conn)["worker state"] == BACKING_OFF, message="the worker to back off")
        wait_for(lambda: (error_attempts(conn) or 0) >= 3, timeout=30,
                 message="the worker to retry after backing off")
        requests_during_outage = fake_model.state()["requests_total"]
    finally:
        written = writer.stop()
    assert running_worker(conn) is None and metrics(conn)["worker pid"] == worker
    assert pending(conn) == len(written) > 20
    assert max(writer.seconds) < 0.5, f"slowest insert: {max(writer.seconds):.3f} s"
    fake_model.set_fault("none")
    conn.execute("SELECT aidb.retry_pipeline_errors('p')")
    wait_drained(conn)
    assert pipeline_errors(conn) == [] and running_worker(conn) == worker
    assert assert_consistent(conn) == 20 + len(written)
    print("requests during outage", requests_during_outage, "written", len(written))
