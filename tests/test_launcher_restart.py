"""The launcher may be killed and restarted while pipelines run (#13).

SIGTERM (pg_terminate_backend) ends the launcher alone: the postmaster
starts a new one a second later while the pipeline workers run on. The new
launcher must adopt them — never start a second worker for a pipeline — and
an adopted worker that exits must be replaced. SIGKILL is a crash: the
postmaster resets every process and shared memory, and each pipeline gets
exactly one fresh worker.

Every pipeline here syncs only once an hour unless woken: a row that
reaches the destination within seconds proves that commits still wake the
worker (the bug was a stale shared entry: no wake-ups, rows waited for the
sync interval).
"""

import os
import re
import signal

import psycopg
import pytest

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.pipeline_checks import (
    create_docs, create_fake_model, create_pipeline, insert_docs, metrics)
from tests.support.workers import BACKEND_TYPE, connection_lost, running_worker

pytestmark = [pytest.mark.workers, pytest.mark.slow]     # restarts the launcher and servers

PIPELINES = ("p1", "p2")
WAKE_UP_DEADLINE = 15       # seconds; without a wake-up a row waits for the hourly sync


@pytest.fixture
def pipelines(conn, model_server):
    """Two drained Background pipelines over docs; {name: worker pid}."""
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(1, "the first document"), (2, "the second document")])
    for name in PIPELINES:
        create_pipeline(conn, name, auto_processing="Background",
                        background_sync_interval="1 hour")
    for name in PIPELINES:
        wait_for(lambda: destination_count(conn, name) == 2, message=f"{name} to drain")
    return {name: wait_for(lambda: running_worker(conn, name), message=f"{name}'s worker")
            for name in PIPELINES}


def destination_count(conn, name):
    return metrics(conn, name)["count(destination records)"]


def launcher_pid(conn):
    row = conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'aidb launcher'"
                       ).fetchone()
    return row and row[0]


def workers_of(conn):
    """{pipeline: [pids]} of this database's pipeline workers in pg_stat_activity,
    checked on every call: no pipeline has two."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT substr(application_name, length('aidb pipeline ') + 1), array_agg(pid) "
        "FROM pg_stat_activity WHERE backend_type = %s AND datname = current_database() "
        "GROUP BY 1", (BACKEND_TYPE,)).fetchall()
    found = dict(rows)
    assert all(len(pids) == 1 for pids in found.values()), f"two workers on a pipeline: {found}"
    return found


def one_worker_each(conn, expected=None):
    """Each pipeline has its worker (the pids in `expected`, if given); else None."""
    found = workers_of(conn)
    pids = {name: found.get(name, [None])[0] for name in PIPELINES}
    if None in pids.values() or (expected and pids != expected):
        return None
    return pids


def assert_woken_by_commit(conn, key):
    """A new row reaches every pipeline's destination within seconds."""
    before = {name: destination_count(conn, name) for name in PIPELINES}
    insert_docs(conn, [(key, f"document {key}, written after the restart")])
    for name in PIPELINES:
        wait_for(lambda: workers_of(conn) and destination_count(conn, name) == before[name] + 1,
                 timeout=WAKE_UP_DEADLINE, message=f"row {key} to reach {name}'s destination")


def restart_launcher(cluster, conn):
    """pg_terminate_backend on the launcher; returns the new launcher's pid
    and where the server log stood before the termination."""
    old = launcher_pid(conn)
    assert old, "no aidb launcher in pg_stat_activity"
    log_start = len(cluster.log_text())
    conn.execute("SELECT pg_terminate_backend(%s)", (old,))
    new = wait_for(lambda: (pid := launcher_pid(conn)) not in (None, old) and pid,
                   message="the postmaster to start a new launcher")
    return new, log_start


def test_restarted_launcher_adopts_the_running_workers(cluster, conn, pipelines):
    _, log_start = restart_launcher(cluster, conn)
    for name, pid in pipelines.items():
        adopted = f'adopted the running worker of pipeline "{name}" (pid {pid})'
        wait_for(lambda: workers_of(conn) and adopted in cluster.log_text()[log_start:],
                 message=f"the new launcher to adopt {name}'s worker")
    assert one_worker_each(conn) == pipelines
    assert_woken_by_commit(conn, 3)
    assert one_worker_each(conn) == pipelines
    assert "already serves it" not in cluster.log_text()[log_start:]


def test_an_adopted_worker_that_exits_is_replaced(cluster, conn, pipelines):
    """The new launcher holds no handle on an adopted worker: the worker's
    exit must still reach it, and only its own entry is released."""
    _, log_start = restart_launcher(cluster, conn)
    wait_for(lambda: workers_of(conn) and cluster.log_text()[log_start:].count("adopted") == 2,
             message="the new launcher to adopt both workers")
    conn.execute("SELECT pg_terminate_backend(%s)", (pipelines["p1"],))
    replaced = wait_for(lambda: (pids := one_worker_each(conn)) and
                        pids["p1"] != pipelines["p1"] and pids,
                        timeout=WAKE_UP_DEADLINE, message="p1's replacement")
    assert replaced["p2"] == pipelines["p2"]
    wait_for(lambda: running_worker(conn, "p1") == replaced["p1"], message="p1's new worker")
    assert_woken_by_commit(conn, 3)


def test_launcher_terminated_again_and_again(cluster, conn, pipelines):
    """Each new launcher adopts what the previous one adopted: still one
    worker each, the very same processes, and wake-ups still arrive."""
    for _ in range(3):
        _, log_start = restart_launcher(cluster, conn)
        wait_for(lambda: workers_of(conn) and cluster.log_text()[log_start:].count("adopted") == 2,
                 message="the new launcher to adopt both workers")
        assert one_worker_each(conn) == pipelines
    assert_woken_by_commit(conn, 3)


def test_pipeline_created_while_no_launcher_runs(cluster, conn, pipelines):
    """A commit with no launcher to wake leaves its pipeline in shared memory:
    the next launcher starts its worker."""
    old = launcher_pid(conn)
    conn.execute("SELECT pg_terminate_backend(%s)", (old,))
    wait_for(lambda: launcher_pid(conn) is None, message="the launcher to exit")
    create_pipeline(conn, "late", auto_processing="Background", background_sync_interval="1 hour")
    wait_for(lambda: workers_of(conn) and running_worker(conn, "late"),
             message="the new launcher to start late's worker")
    assert one_worker_each(conn) == pipelines
    wait_for(lambda: destination_count(conn, "late") == 2, message="late to drain")


def test_killed_launcher_crash_restart_leaves_one_worker_each(cluster, dbname, conn, pipelines):
    log_start = len(cluster.log_text())
    os.kill(launcher_pid(conn), signal.SIGKILL)
    wait_for(lambda: connection_lost(conn), message="the crash restart to end our session")

    def reconnect():
        try:
            return psycopg.connect(cluster.dsn(dbname), autocommit=True)
        except psycopg.OperationalError:
            return None     # still recovering
    with wait_for(reconnect, timeout=60, message="the cluster to accept connections") as fresh:
        assert re.search(r"aidb launcher.* was terminated by signal 9",
                         cluster.log_text()[log_start:])
        new_pids = wait_for(lambda: one_worker_each(fresh), timeout=30,
                            message="a worker for each pipeline after the crash")
        assert not set(new_pids.values()) & set(pipelines.values())
        for name in PIPELINES:
            wait_for(lambda: running_worker(fresh, name), message=f"{name}'s worker to run")
        assert_woken_by_commit(fresh, 3)
        assert one_worker_each(fresh) == new_pids


def set_max_workers(conn, count):
    """aidb.max_workers for the cluster (None: back to the default)."""
    conn.execute("ALTER SYSTEM RESET aidb.max_workers" if count is None else
                 f"ALTER SYSTEM SET aidb.max_workers = {int(count)}")
    conn.execute("SELECT pg_reload_conf()")


def test_adopted_workers_count_against_max_workers(cluster, conn, model_server):
    """With aidb.max_workers = 1 taken by a worker the new launcher did not
    start, the other pipeline keeps waiting: the launcher says so again
    rather than starting a second worker."""
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(1, "the only document")])
    create_pipeline(conn, "p1", auto_processing="Background")
    first = wait_for(lambda: running_worker(conn, "p1"), message="p1's worker")
    set_max_workers(conn, 1)
    try:
        create_pipeline(conn, "p2", auto_processing="Background")
        wait_for(lambda: metrics(conn, "p2")["Status"] == "WaitingForWorker",
                 message="p2 to wait for a worker")
        _, log_start = restart_launcher(cluster, conn)
        waits = 'WARNING:  aidb: pipeline "p2" waits for a worker: aidb.max_workers (1) are running'
        wait_for(lambda: waits in cluster.log_text()[log_start:],
                 message="the new launcher to keep p2 waiting")
        assert f'"p1" (pid {first})' in cluster.log_text()[log_start:]     # adopted
        assert workers_of(conn) == {"p1": [first]}
        assert metrics(conn, "p2")["Status"] == "WaitingForWorker"
    finally:
        set_max_workers(conn, None)
    wait_for(lambda: running_worker(conn, "p2"), message="p2's worker once a slot is free")
    assert workers_of(conn)["p1"] == [first]


def test_worker_state_crosses_as_a_code(conn, pipelines):
    """C hands SQL a code; aidb._worker_state alone adds the words users read."""
    rows = conn.execute("SELECT p.name, w.code, w.state FROM aidb.pipeline_registry p, "
                        "aidb._worker_state(p.id) w ORDER BY 1").fetchall()
    assert rows == [(name, "running", "running") for name in PIPELINES]
    assert {r[0]: r[1] for r in conn.execute(
        "SELECT pipeline, state FROM aidb.workers WHERE kind = 'background'")} == \
        {name: "running" for name in PIPELINES}
