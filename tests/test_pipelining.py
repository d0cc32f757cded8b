"""Pipelined workers (docs/architecture.md, "The batch protocol"): a worker
keeps up to aidb.worker_batches_in_flight (background) or
--batches-in-flight (external) batches waiting for the model while it writes
the oldest, and every guarantee holds: killed with batches in flight, it
loses nothing and writes nothing twice; several workers on one pipeline
never write a key twice for one content, and a change made while its key's
batch is in flight wins.

Latency hiding is shown without timing: the test model server counts the
most requests it had in flight at once, and one worker connection must have
had more than one — and never more than its setting."""

import asyncio
import os
import random
import signal
import threading

import psycopg
import pytest

import aidb
from tests.support.background import (
    background_pipeline, destination_count, fill_docs, wait_drained, wait_for_cluster)
from tests.support.common import wait_for
from tests.support.external_worker import start_cli, stop_cli
from tests.support.pipeline_checks import (
    assert_consistent, create_docs, create_pipeline, destination_keys, pending,
    run_pipeline)
from tests.support.workers import connection_lost, running_worker, set_batches_in_flight
from tests.support.writers import numbered_docs

pytestmark = [pytest.mark.workers, pytest.mark.model_settings(max_retries=1, timeout=5)]


@pytest.fixture
def batches_in_flight(cluster, dbname, conn):
    """Sets the background workers' setting; restores the default afterwards
    (on a connection of its own: a crash restart ends the test's)."""
    yield lambda value: set_batches_in_flight(conn, value)
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as fresh:
        set_batches_in_flight(fresh, None)


def log_destination_writes(conn, name="p"):
    """Every row inserted into the pipeline's destination lands in
    public.writes (key, value, n: the order) when its transaction commits: a
    key's content written twice shows as two rows."""
    destination = conn.execute("SELECT destination FROM aidb.pipelines WHERE name = %s",
                               (name,)).fetchone()[0]
    conn.execute("CREATE TABLE public.writes (key int, value text, n serial)")
    conn.execute("""CREATE FUNCTION public.log_write() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN INSERT INTO public.writes VALUES (NEW.source_key, NEW.value);
                          RETURN NULL; END $$""")
    conn.execute(f"CREATE TRIGGER log_write AFTER INSERT ON {destination} "
                 "FOR EACH ROW EXECUTE FUNCTION public.log_write()")


def contents_written_twice(conn):
    """[(key, value, times)] of contents inserted more than once."""
    return conn.execute("SELECT key, value, count(*) FROM public.writes GROUP BY 1, 2 "
                        "HAVING count(*) > 1 ORDER BY 1 LIMIT 10").fetchall()


def keys_written(conn):
    return conn.execute("SELECT count(DISTINCT key) FROM public.writes").fetchone()[0]


def state_table(conn, name="p"):
    return conn.execute("SELECT format('aidb.%%I', '_state_' || id) FROM aidb.pipeline_registry "
                        "WHERE name = %s", (name,)).fetchone()[0]


def leases_left(conn, name="p"):
    """State rows that still name a lease holder."""
    return conn.execute(f"SELECT count(*) FROM {state_table(conn, name)} "
                        "WHERE lease IS NOT NULL").fetchone()[0]


def leased_keys(conn, name="p"):
    return {key for (key,) in conn.execute(f"SELECT key FROM {state_table(conn, name)} "
                                           "WHERE lease IS NOT NULL")}


def forge_live_lease(conn, holder, keys, name="p"):
    """Lease `keys` to a token whose advisory lock `holder`'s session holds,
    as a worker connection would (leases.py)."""
    high, low = 12345, 6789
    holder.execute("SELECT pg_advisory_lock(%s, %s)", (high, low))
    state = state_table(conn, name)
    conn.execute(f"INSERT INTO {state} (key) SELECT unnest(%s::int[]) ON CONFLICT DO NOTHING",
                 (list(keys),))
    conn.execute(f"UPDATE {state} SET lease = %s WHERE key = ANY(%s)",
                 ((high << 32) | low, list(keys)))


def external_backends(conn):
    return conn.execute("SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = 'aidb external worker'").fetchone()[0]


# --- latency hidden: more than one request of one connection in flight -------------------------

def test_background_worker_keeps_batches_in_flight_up_to_its_setting(conn, fake_model,
                                                                     batches_in_flight):
    batches_in_flight(3)
    fill_docs(conn, 120)
    fake_model.set_latency(150)
    background_pipeline(conn, batch_size=5)     # one worker: one connection
    wait_drained(conn)
    peak = fake_model.state()["peak_active"]
    assert 1 < peak <= 3, f"{peak} requests in flight at once with aidb.worker_batches_in_flight = 3"
    assert assert_consistent(conn) == 120
    assert leases_left(conn) == 0


@pytest.mark.parametrize("setting", [1, 3])
def test_external_worker_keeps_batches_in_flight_up_to_its_setting(cluster, dbname, conn,
                                                                   fake_model, setting):
    fill_docs(conn, 80)
    create_pipeline(conn, batch_size=5)
    fake_model.reset()                          # the peak of this worker alone
    fake_model.set_latency(100)
    worker = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], once=True, concurrency=1,
                         batches_in_flight=setting)
    assert asyncio.run(worker.run()) == 0
    peak = fake_model.state()["peak_active"]
    if setting == 1:
        assert peak == 1, f"{peak} requests in flight at once with one batch at a time"
    else:
        assert 1 < peak <= setting, f"{peak} requests in flight at once with {setting} batches"
    assert assert_consistent(conn) == 80
    assert leases_left(conn) == 0


# --- leases: live ones are respected, dead ones taken over at once, Live breaks them --------------

def test_run_pipeline_skips_keys_a_live_holder_leased_and_takes_them_once_it_is_gone(
        conn, connect, fake_model):
    create_docs(conn, numbered_docs(range(1, 21)))
    create_pipeline(conn)                   # Disabled: the backlog holds all 20 keys
    holder = connect()
    forge_live_lease(conn, holder, range(1, 6))
    run_pipeline(conn)
    assert destination_keys(conn) == set(range(6, 21))
    assert pending(conn) == 5 and leased_keys(conn) == set(range(1, 6))
    holder.close()                          # the holder's session ends, and its lock with it
    wait_for(lambda: not conn.execute("SELECT FROM pg_locks WHERE locktype = 'advisory'")
             .fetchall(), message="the holder's advisory lock to go")
    run_pipeline(conn)                      # no timeout to wait for
    assert assert_consistent(conn) == 20
    assert pending(conn) == 0 and leases_left(conn) == 0


def test_live_breaks_a_lease_and_writes_the_change(conn, connect, fake_model):
    create_docs(conn, numbered_docs(range(1, 4)))
    create_pipeline(conn, auto_processing="Live")
    log_destination_writes(conn)
    holder = connect()
    forge_live_lease(conn, holder, [2])
    conn.execute("UPDATE docs SET body = 'changed while leased' WHERE id = 2")
    assert leases_left(conn) == 0
    assert conn.execute("SELECT value FROM public.writes WHERE key = 2").fetchall() == \
        [("changed while leased",)]


def test_a_worker_drops_the_results_of_keys_whose_lease_live_broke(cluster, dbname, conn,
                                                                   fake_model):
    create_docs(conn, numbered_docs(range(1, 61)))
    create_pipeline(conn, batch_size=5)     # Disabled: an external worker named to serve it
    log_destination_writes(conn)
    fake_model.set_latency(2000)            # the batches stay in flight for seconds
    worker = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], poll_interval=1,
                         batches_in_flight=3)

    def changed_under_the_worker():
        wait_for(lambda: leased_keys(conn), message="batches in flight")
        conn.execute("SELECT aidb.update_pipeline('p', auto_processing => 'Live')")
        # The keys leased right now, changed by one statement (Live breaks their leases).
        changed = conn.execute(
            f"UPDATE docs SET body = 'live ' || id WHERE id IN "
            f"(SELECT key FROM {state_table(conn)} WHERE lease IS NOT NULL) RETURNING id").fetchall()
        fake_model.set_latency(0)
        wait_for(lambda: pending(conn) == 0, timeout=60, message="the backlog to drain")
        return {key for (key,) in changed}
    changed = _run_worker_while(worker, changed_under_the_worker)
    assert changed and leases_left(conn) == 0
    assert assert_consistent(conn) == 60
    # No old body was written after the new one; and the worker's results
    # for the keys it had in flight were dropped, not written (a write that
    # committed just before the change, legitimately, is the only exception).
    history = {}
    for key, value in conn.execute("SELECT key, value FROM public.writes WHERE key = ANY(%s) "
                                   "ORDER BY n", (list(changed),)):
        history.setdefault(key, []).append(value.startswith("live "))
    assert all(h[-1] and h.count(True) == 1 for h in history.values()), history
    dropped = [key for key, h in history.items() if h == [True]]
    assert len(dropped) >= len(changed) - 5, history   # at most one batch wrote first
    assert contents_written_twice(conn) == []


def _run_worker_while(worker, action):
    """action()'s result, run while `worker` serves (then shut down gracefully)."""
    async def both():
        task = asyncio.create_task(worker.run())
        try:
            return await asyncio.to_thread(action)
        finally:
            await worker.request_graceful_shutdown()
            assert await task == 0
    return asyncio.run(both())


# --- killed with batches in flight: nothing lost, nothing written twice ------------------------

@pytest.mark.slow       # SIGKILL restarts the whole cluster
@pytest.mark.resilience
def test_background_worker_killed_with_batches_in_flight(cluster, dbname, conn, fake_model,
                                                         batches_in_flight):
    batches_in_flight(4)
    fill_docs(conn, 400)
    fake_model.set_latency(300)
    create_pipeline(conn, batch_size=10)
    log_destination_writes(conn)
    conn.execute("SELECT aidb.update_pipeline('p', auto_processing => 'Background')")
    worker = wait_for(lambda: running_worker(conn), message="the worker")
    wait_for(lambda: destination_count(conn) > 0 and fake_model.state()["in_flight"] >= 2,
             message="batches in flight after the first write")
    os.kill(worker, signal.SIGKILL)
    wait_for(lambda: connection_lost(conn), message="the crash restart to end our session")
    with wait_for_cluster(cluster, dbname) as fresh:
        assert 0 < pending(fresh) < 400
        assert leases_left(fresh) > 0          # the dead worker's leases survive the crash...
        fake_model.set_latency(0)
        wait_for(lambda: running_worker(fresh), timeout=30, message="the worker after the crash")
        wait_drained(fresh)                    # ...and are taken over by its successor
        assert assert_consistent(fresh) == 400
        assert contents_written_twice(fresh) == []
        assert keys_written(fresh) == 400
        assert leases_left(fresh) == 0


@pytest.mark.resilience
def test_external_worker_killed_with_batches_in_flight(cluster, dbname, conn, fake_model,
                                                       tmp_path):
    fill_docs(conn, 300)
    create_pipeline(conn, batch_size=10)
    log_destination_writes(conn)
    fake_model.set_latency(300)
    process = start_cli("-d", cluster.dsn(dbname), "-i", "p", "-c", "2", "--batches-in-flight", "3",
                        "--poll-interval", "1", cwd=tmp_path)
    try:
        wait_for(lambda: destination_count(conn) > 0 and fake_model.state()["in_flight"] >= 3,
                 message="batches in flight after the first write")
        held = leases_left(conn)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert held > 0
    # Its backends go as they notice the closed connection; their leases with them.
    wait_for(lambda: external_backends(conn) == 0, message="the killed worker's backends to end")
    assert leases_left(conn) > 0 and pending(conn) > 0
    fake_model.set_latency(0)
    # A new worker takes the dead worker's keys at once: run once, it leaves nothing behind.
    successor = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], once=True)
    assert asyncio.run(successor.run()) == 0
    assert assert_consistent(conn) == 300
    assert contents_written_twice(conn) == []
    assert keys_written(conn) == 300
    assert leases_left(conn) == 0


# --- several workers, changes while batches are in flight ---------------------------------------

@pytest.mark.slow
@pytest.mark.resilience
def test_two_external_workers_and_a_background_worker_with_changes_in_flight(
        cluster, dbname, conn, connect, fake_model, batches_in_flight, tmp_path):
    batches_in_flight(3)
    fill_docs(conn, 300)
    create_pipeline(conn, batch_size=10)
    log_destination_writes(conn)
    fake_model.set_latency(80)
    conn.execute("SELECT aidb.update_pipeline('p', auto_processing => 'Background')")
    externals = [start_cli("-d", cluster.dsn(dbname), "-i", "p", "--batches-in-flight", "3",
                           "--poll-interval", "1", cwd=_own_dir(tmp_path, n)) for n in range(2)]
    try:
        wait_for(lambda: running_worker(conn), message="the background worker")
        wait_for(lambda: external_backends(conn) == 2, message="both external workers")
        _update_while_draining(connect(), seconds=6)
        wait_drained(conn)
    finally:
        outcomes = [stop_cli(process) for process in externals]
    assert [status for status, _ in outcomes] == [0, 0], outcomes
    assert assert_consistent(conn) == 300      # every latest change won
    assert contents_written_twice(conn) == []
    assert leases_left(conn) == 0


def _own_dir(tmp_path, n):
    path = tmp_path / f"worker-{n}"
    path.mkdir()
    return path


def _update_while_draining(writer, seconds):
    """Rewrite random rows with bodies never used before (so a content written
    twice is a key processed twice for one change), many of them while their
    key's batch waits for the model."""
    rng = random.Random(16)
    stop = threading.Event()
    threading.Timer(seconds, stop.set).start()
    version = 0
    while not stop.is_set():
        version += 1
        keys = rng.sample(range(1, 301), 5)
        writer.execute("UPDATE docs SET body = 'version ' || %s || ' of ' || id "
                       "WHERE id = ANY(%s)", (version, keys))
        stop.wait(0.02)
    writer.close()
