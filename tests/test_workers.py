"""Background workers under stress: killed, cancelled, restarted with the
server, starved of worker slots, recycled for memory. A real cluster that
preloads aidb, the fake OpenAI-compatible server over HTTP; after each
scenario the destination is compared with an independent recomputation from
the source rows (pipeline_checks). Provider faults under load are in
tests/test_resilience.py."""

import os
import re
import signal

import psycopg
import pytest

from pgcluster import throwaway_cluster
from tests.support.background import (
    background_pipeline, destination_count, fill_docs, wait_drained, wait_for_cluster)
from tests.support.common import TEST_API_KEY, wait_for
from tests.support.pipeline_checks import (
    MODEL, assert_consistent, create_docs, create_fake_model, create_pipeline, insert_docs,
    metrics, pending, pipeline_errors)
from tests.support.workers import activity_pid, connection_lost, running_worker
from tests.support.writers import numbered_docs

# A failing batch ends within seconds, and the worker backs off.
# Crashes, restarts and slot exhaustion: slow.
pytestmark = [pytest.mark.workers, pytest.mark.slow,
              pytest.mark.model_settings(max_retries=1, timeout=2)]

# --- 1. SIGTERM ----------------------------------------------------------------------------------

@pytest.mark.smoke
@pytest.mark.resilience
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


# --- 2. SIGKILL: the postmaster resets the whole cluster -----------------------------------------

PIPELINES = ("p1", "p2", "p3")


@pytest.mark.smoke
@pytest.mark.resilience
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
        log = cluster.log_text()[log_start:]
        assert "terminated by signal 9" in log and "reinitializing" in log
        new_pids = {name: wait_for(lambda: running_worker(fresh, name), timeout=30,
                                   message=f"{name}'s worker after the crash")
                    for name in PIPELINES}
        assert not set(new_pids.values()) & set(pids.values())
        fake_model.set_latency(0)
        for name in PIPELINES:
            wait_drained(fresh, name)
            assert assert_consistent(fresh, name) == 600


# --- 3. server restart in the middle of a backfill -----------------------------------------------

@pytest.mark.resilience
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


# --- 4. real worker-slot exhaustion --------------------------------------------------------------

def waiting_warnings(cluster, name):
    return cluster.log_text().count(f'WARNING:  aidb: pipeline "{name}" waits for a worker')


@pytest.fixture
def small_cluster():
    """A cluster with 4 worker slots: the launcher and the logical replication
    launcher take two, so two are left for discovery and pipeline workers."""
    pg = throwaway_cluster(settings={"max_worker_processes": "4"})
    try:
        pg.psql("CREATE EXTENSION aidb CASCADE")
        yield pg
    finally:
        pg.destroy()


@pytest.mark.smoke
def test_pipelines_beyond_free_slots_wait_then_start(small_cluster, model_server):
    names = ["p1", "p2", "p3"]
    with psycopg.connect(small_cluster.dsn(), autocommit=True) as conn:
        create_fake_model(conn, model_server.url, TEST_API_KEY)
        create_docs(conn, numbered_docs(range(1, 11)))
        for name in names:     # one commit each: no discovery worker needed to see them
            create_pipeline(conn, name, auto_processing="Background")
        states = lambda: {n: metrics(conn, n)["worker state"] for n in names}  # noqa: E731
        wait_for(lambda: sorted(states().values()) == ["WaitingForWorker", "running", "running"],
                 message="two workers running and one pipeline waiting")
        [waiting] = [n for n, state in states().items() if state == "WaitingForWorker"]
        assert metrics(conn, waiting)["Status"] == "WaitingForWorker"
        # The launcher retries the start at each pass; the WARNING stays
        # single. Each later pipeline that is seen waiting marks a pass that
        # retried this one too.
        for later in ("p4", "p5"):
            create_pipeline(conn, later, auto_processing="Background")
            wait_for(lambda: metrics(conn, later)["worker state"] == "WaitingForWorker",
                     message=f"{later} to wait for a worker")
        assert {n: waiting_warnings(small_cluster, n) for n in names} == \
            {n: int(n == waiting) for n in names}
        for later in ("p4", "p5"):
            conn.execute("SELECT aidb.delete_pipeline(%s)", (later,))
        conn.execute("SELECT aidb.delete_pipeline(%s)", (next(n for n in names if n != waiting),))
        wait_for(lambda: running_worker(conn, waiting), message="the waiting pipeline's worker")
        wait_drained(conn, waiting)
        assert assert_consistent(conn, waiting) == 10
        assert waiting_warnings(small_cluster, waiting) == 1


# --- 5. pg_cancel_backend cancels the batch, not the worker --------------------------------------

@pytest.mark.resilience
def test_cancelled_batch_rolls_back_and_worker_goes_on(cluster, conn, fake_model):
    create_docs(conn)
    worker = background_pipeline(conn)     # (creating it asks the model for its dimensions)
    fake_model.set_fault("hang")
    insert_docs(conn, numbered_docs(range(1, 31)))
    wait_for(lambda: fake_model.state()["in_flight"] >= 1,
             message="a batch waiting on the provider")
    log_start = len(cluster.log_text())
    conn.execute("SELECT pg_cancel_backend(%s)", (worker,))
    cancelled = re.compile(rf"\[{worker}\] ERROR: .*canceling statement due to user request")
    wait_for(lambda: cancelled.search(cluster.log_text()[log_start:]),
             message="the batch to be cancelled")
    assert activity_pid(conn) == worker
    assert pending(conn) == 30 and destination_count(conn) == 0
    fake_model.set_fault("none")
    wait_drained(conn)
    assert running_worker(conn) == worker and pipeline_errors(conn) == []
    assert assert_consistent(conn) == 30


# --- 6. a worker over aidb.worker_memory_limit recycles itself -----------------------------------

def set_memory_limit(conn, megabytes):
    """aidb.worker_memory_limit for every worker (None: back to the default)."""
    if megabytes is None:
        conn.execute("ALTER SYSTEM RESET aidb.worker_memory_limit")
    else:
        conn.execute(f"ALTER SYSTEM SET aidb.worker_memory_limit = {int(megabytes)}")
    conn.execute("SELECT pg_reload_conf()")


def test_worker_over_memory_limit_restarts(cluster, conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 11)))
    first = background_pipeline(conn)
    wait_drained(conn)
    log_start = len(cluster.log_text())
    recycled = re.compile(rf'\[{first}\] LOG:  aidb pipeline "p": restarting, resident memory '
                          r"\d+ MB is over aidb.worker_memory_limit \(1 MB\)")
    set_memory_limit(conn, 1)
    try:
        insert_docs(conn, numbered_docs(range(11, 21), prefix="under the limit"))
        wait_for(lambda: recycled.search(cluster.log_text()[log_start:]),
                 message="the worker to recycle itself")
        wait_for(lambda: running_worker(conn, other_than=first), message="a fresh worker")
    finally:
        set_memory_limit(conn, None)
    insert_docs(conn, numbered_docs(range(21, 31), prefix="back to normal"))
    wait_drained(conn)
    settled = wait_for(lambda: running_worker(conn), message="the worker after the reset")
    insert_docs(conn, numbered_docs(range(31, 41), prefix="still the same worker"))
    wait_drained(conn)
    assert running_worker(conn) == settled != first
    assert assert_consistent(conn) == 40


# --- 7. the launcher learns of pipeline changes at commit, not before ----------------------------

def rolled_back(conn, statements):
    """Run statements in a savepoint that is then rolled back."""
    with pytest.raises(RuntimeError, match="roll back"):
        with conn.transaction():
            for statement in statements:
                conn.execute(statement)
            raise RuntimeError("roll back")


def test_rolled_back_registry_changes_never_reach_the_launcher(conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 6)))
    kept = background_pipeline(conn, "kept")
    with conn.transaction():
        create_pipeline(conn, "created", auto_processing="Background")
        rolled_back(conn, ["SELECT aidb.update_pipeline('kept', auto_processing => 'Disabled')",
                           "SELECT aidb.update_pipeline('created', auto_processing => 'Disabled')"])
        rolled_back(conn, ["SELECT aidb.create_pipeline('never', 'docs', source_data_column => "
                           "'body', step_1 => 'KnowledgeBase', step_1_options => aidb."
                           f"knowledge_base_config('{MODEL}'), auto_processing => 'Background')"])
    wait_for(lambda: running_worker(conn, "created"), message="the committed pipeline's worker")
    # The launcher acts on changes in commit order: once it has started the
    # worker of a pipeline committed afterwards, a leaked change would have
    # stopped kept's worker or started one for "never".
    background_pipeline(conn, "later")
    assert running_worker(conn, "kept") == kept and not activity_pid(conn, "never")


# --- 8. a failed DROP DATABASE gives the database its workers back -------------------------------

@pytest.mark.smoke
def test_failed_drop_database_restarts_its_workers(cluster, dbname, conn, fake_model):
    create_docs(conn, numbered_docs(range(1, 6)))
    first = background_pipeline(conn)
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        # Our own session keeps the database busy: the drop stops the
        # workers, waits for the other sessions, and fails.
        with pytest.raises(psycopg.errors.ObjectInUse):
            admin.execute(f"DROP DATABASE {dbname}")
    wait_for(lambda: running_worker(conn, other_than=first), message="the worker to come back")
    insert_docs(conn, numbered_docs(range(6, 11), prefix="after the failed drop"))
    wait_drained(conn)
    assert assert_consistent(conn) == 10

