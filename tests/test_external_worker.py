"""The external worker — the `aidb worker` command and aidb.Worker — against
a real cluster and the fake OpenAI-compatible server over HTTP.

The cluster's background workers are switched off for this module (but for
the test that mixes both kinds), so whatever gets processed here, an external
worker processed. After each scenario the destination is compared with an
independent recomputation from the source rows (pipeline_checks).
"""

import asyncio
import math
import os
import pty
import re
import select
import subprocess
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import aidb
from pgcluster import free_port
from tests.support.background import background_pipeline, destination_count, wait_drained
from tests.support.common import TEST_API_KEY, wait_for
from tests.support.external_worker import (
    AIDB, CLI_TIMEOUT, cli_env, run_cli, run_worker_during, start_cli, stop_cli)
from tests.support.pipeline_checks import (
    MODEL, assert_consistent, create_docs, create_fake_model, create_pipeline, destination_keys,
    insert_docs, metrics, pending, pipeline_errors)
from tests.support.workers import running_worker, set_model_config
from tests.support.writers import RandomWriter, numbered_docs, write_while_workers_keep_up

# The fake model gives up fast: a failing batch ends within seconds.
pytestmark = pytest.mark.model_settings(max_retries=1, timeout=2)

PASSWORD = "Sw0rdfish-never-in-logs"


# --- fixtures and helpers ------------------------------------------------------------------------

def set_background_workers(cluster, enabled):
    """aidb.enable_background_workers on or off (None: the default, on), once
    new sessions see it."""
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        if enabled is None:
            admin.execute("ALTER SYSTEM RESET aidb.enable_background_workers")
        else:
            admin.execute(f"ALTER SYSTEM SET aidb.enable_background_workers = {enabled}")
        admin.execute("SELECT pg_reload_conf()")
    expected = "off" if enabled is False else "on"

    def in_force():
        with psycopg.connect(cluster.dsn(), autocommit=True) as fresh:
            return fresh.execute("SHOW aidb.enable_background_workers").fetchone()[0] == expected
    wait_for(in_force, message=f"aidb.enable_background_workers = {expected}")


@pytest.fixture(scope="module", autouse=True)
def external_workers_only(cluster):
    set_background_workers(cluster, False)
    yield
    set_background_workers(cluster, None)


@pytest.fixture
def background_workers(cluster):
    set_background_workers(cluster, True)
    yield
    set_background_workers(cluster, False)


def external_workers(conn):
    """[(state, keys_processed)] of the external workers in aidb.workers."""
    return conn.execute("SELECT state, keys_processed FROM aidb.workers "
                        "WHERE kind = 'external' ORDER BY keys_processed").fetchall()


def one_line(stderr):
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {stderr!r}"
    return lines[0]


# --- the command line ----------------------------------------------------------------------------

def run_on_a_terminal(args, cwd):
    """`aidb worker ARGS` with stderr on a pseudo-terminal; returns (exit
    status, everything it wrote there)."""
    main, child = pty.openpty()
    process = subprocess.Popen([AIDB, "worker", *args], cwd=cwd, env=cli_env({"COLUMNS": "100"}),
                               stdin=subprocess.DEVNULL, stdout=child, stderr=child)
    os.close(child)
    output, deadline = b"", time.monotonic() + CLI_TIMEOUT
    try:
        while time.monotonic() < deadline:
            if select.select([main], [], [], 1)[0]:
                try:
                    chunk = os.read(main, 65536)
                except OSError:     # EIO: the worker has exited and closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
    finally:
        os.close(main)
    return process.wait(timeout=CLI_TIMEOUT), output.decode(errors="replace")


@pytest.mark.smoke
def test_once_drains_the_backlog_and_exits_zero(cluster, dbname, conn, fake_model, tmp_path):
    create_docs(conn, numbered_docs(range(1, 61)))
    create_pipeline(conn, auto_processing="Background", batch_size=10)
    assert running_worker(conn) is None and pending(conn) == 60   # only we will process it
    status, output = run_on_a_terminal(["-d", cluster.dsn(dbname), "--once"], tmp_path)
    assert status == 0 and "Traceback" not in output, output
    assert pending(conn) == 0 and assert_consistent(conn) == 60
    assert external_workers(conn) == [("stopped", 60)]
    # On a terminal: a progress bar per pipeline (rich's), redrawn after each
    # batch; the last drawing, less its colours, shows the final counts.
    final = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.rsplit("\x1b[2K", 1)[-1])
    bar = r"^p +[━-]{40} +100% 60/60 keys +\d+ keys/s"
    assert re.search(bar, final, re.MULTILINE), output
    assert "processed=" not in output               # batches show as bars, not log lines


def test_once_with_a_failing_provider_exits_nonzero(cluster, dbname, conn, fake_model, tmp_path):
    create_docs(conn, numbered_docs(range(1, 21)))
    create_pipeline(conn, auto_processing="Background", batch_size=10)
    set_model_config(conn, MODEL, max_retries=0)
    fake_model.set_fault("http500")
    result = run_cli("-d", cluster.dsn(dbname), "--once", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "pipeline=p error=" in result.stderr and "HTTP 500" in result.stderr
    assert pending(conn) == 20 and destination_keys(conn) == set()   # nothing lost
    assert [category for _, category, _ in pipeline_errors(conn)] == ["PipelineTemporary"]


def test_a_failing_pipeline_backs_off_without_holding_up_the_others(cluster, dbname, conn,
                                                                    fake_model, tmp_path):
    create_docs(conn, numbered_docs(range(1, 101)))
    create_pipeline(conn, auto_processing="Background", batch_size=5)
    create_fake_model(conn, fake_model.url, TEST_API_KEY, name="doomed")
    conn.execute("SELECT aidb.create_pipeline('doomed', source => 'docs', "
                 "source_data_column => 'body', step_1 => 'KnowledgeBase', "
                 "step_1_options => aidb.knowledge_base_config('doomed'), "
                 "auto_processing => 'Background')")
    set_model_config(conn, "doomed", model="no-such-model")     # the server now answers 404
    fake_model.set_latency(20)
    started = time.monotonic()
    result = run_cli("-d", cluster.dsn(dbname), "--once", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert assert_consistent(conn) == 100 and pending(conn, "doomed") == 100
    # Tried at every pass, doomed would fail once per batch of p (20 times);
    # backing off 1 s, 2 s, 4 s ... it fails at most 2 + log2(seconds) times.
    attempts = result.stderr.count("pipeline=doomed error=")
    assert 1 <= attempts <= 2 + math.log2(elapsed), result.stderr


@pytest.mark.parametrize("url", [
    "postgresql://aidb_nobody:{password}@127.0.0.1:{port}/{dbname}",
    "host=127.0.0.1 port={unused} user=aidb_nobody password='{password}' dbname={dbname}",
    "postgresql://aidb_nobody@127.0.0.1:{unused}/{dbname}?password={password}",
], ids=["url", "key-value", "query-parameter"])
def test_bad_db_url_is_one_line_without_the_password(cluster, dbname, url, tmp_path):
    url = url.format(password=PASSWORD, port=cluster.port, unused=free_port(), dbname=dbname)
    result = run_cli("-d", url, "--once", cwd=tmp_path)
    assert result.returncode != 0
    line = one_line(result.stderr)
    assert line.startswith("aidb worker: cannot connect to ")
    assert PASSWORD not in result.stderr + result.stdout


def test_unknown_pipeline_is_one_line(cluster, dbname, conn, tmp_path):
    result = run_cli("-d", cluster.dsn(dbname), "-i", "no_such_pipeline", "--once", cwd=tmp_path)
    assert result.returncode != 0
    assert one_line(result.stderr) == 'aidb worker: pipeline "no_such_pipeline" does not exist'


def test_options_from_the_environment_and_a_dotenv_file(cluster, dbname, conn, fake_model,
                                                         tmp_path):
    create_docs(conn, numbered_docs(range(1, 21)))
    # Disabled pipelines: a worker serves them only when it is told their names.
    create_pipeline(conn, "from_env", batch_size=10)
    create_pipeline(conn, "from_dotenv", batch_size=10)
    # No arguments: the database, the pipeline and --once come from the environment
    # (without --once the worker would not exit, and run_cli would time out).
    result = run_cli(cwd=tmp_path, env={"AIDB_WORKER_DB_URL": cluster.dsn(dbname),
                                        "AIDB_WORKER_PIPELINE": "from_env",
                                        "AIDB_WORKER_ONCE": "true"})
    assert result.returncode == 0, result.stderr
    assert assert_consistent(conn, "from_env") == 20 and pending(conn, "from_dotenv") == 20
    (tmp_path / ".env").write_text("# the worker's settings\n"
                                   f"AIDB_WORKER_DB_URL={cluster.dsn(dbname)}\n"
                                   "AIDB_WORKER_PIPELINE='from_dotenv'\n"
                                   "export AIDB_WORKER_ONCE=true  # exit when drained\n")
    result = run_cli(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert assert_consistent(conn, "from_dotenv") == 20


def test_poll_interval_takes_durations(cluster, dbname, conn, fake_model, tmp_path):
    create_docs(conn)
    create_pipeline(conn, auto_processing="Background")
    result = run_cli("-d", cluster.dsn(dbname), "--poll-interval", "45s", "--once", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    heartbeat = conn.execute("SELECT poll_interval FROM aidb.worker_heartbeats").fetchone()
    assert heartbeat[0].total_seconds() == 45
    result = run_cli("-d", cluster.dsn(dbname), "--poll-interval", "soon", "--once", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "aidb worker: error: argument --poll-interval: not a duration: 'soon' "
        "(use seconds or e.g. 45s, 5m, 1h)")
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("value, message", [
    ("0", "argument --batches-in-flight: not a positive integer: '0'"),
    ("-3", "argument --batches-in-flight: not a positive integer: '-3'"),
    ("eight", "argument --batches-in-flight: not a positive integer: 'eight'"),
    ("65", "argument --batches-in-flight: at most 64, not 65"),
    ("100000", "argument --batches-in-flight: at most 64, not 100000"),
])
def test_batches_in_flight_out_of_range_is_refused_before_connecting(cluster, dbname, conn,
                                                                     fake_model, tmp_path,
                                                                     value, message):
    """An operator's typo never starts a worker that would lease without
    bound (or not at all): the command line and the library refuse it, and
    the pipeline is left as it was."""
    create_docs(conn, numbered_docs(range(1, 21)))
    create_pipeline(conn)
    result = run_cli("-d", cluster.dsn(dbname), "--batches-in-flight", value, "--once",
                     cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == f"aidb worker: error: {message}"
    assert "Traceback" not in result.stderr
    if value.lstrip("-").isdigit():
        with pytest.raises(ValueError, match="batches_in_flight must be 1 to 64"):
            aidb.Worker(cluster.dsn(dbname), pipelines=["p"], batches_in_flight=int(value))
    assert pending(conn) == 20 and destination_count(conn) == 0
    assert conn.execute("SELECT count(*) FROM aidb.worker_heartbeats").fetchone()[0] == 0


def read_metrics(port):
    """{(metric, pipeline or None): value} from the worker's /metrics (empty
    until it listens)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    return {(sample.name, sample.labels.get("pipeline")): int(sample.value)
            for family in text_string_to_metric_families(text)
            for sample in family.samples}


def metrics_showing(port, metric, value, pipeline="p"):
    """The worker's metrics once `metric` of `pipeline` has `value`, else None."""
    samples = read_metrics(port)
    return samples if samples.get((metric, pipeline)) == value else None


def test_metrics_port_serves_per_pipeline_counters(cluster, dbname, conn, fake_model, tmp_path):
    create_docs(conn, numbered_docs(range(1, 41)))
    create_pipeline(conn, auto_processing="Background", batch_size=10)
    port = free_port()
    process = start_cli("-d", cluster.dsn(dbname), "--metrics-port", str(port), cwd=tmp_path)
    try:
        samples = wait_for(lambda: metrics_showing(port, "aidb_worker_keys_processed_total", 40),
                           message="40 keys in the worker's metrics")
        assert external_workers(conn)[0][0] == "running"
    finally:
        status, stderr = stop_cli(process)
    assert status == 0, stderr
    assert samples[("aidb_worker_batches_total", "p")] >= 4
    assert samples[("aidb_worker_errors_total", "p")] == 0
    assert samples[("aidb_worker_pending_keys", "p")] == 0
    # The process metrics every exporter has.
    assert samples[("process_resident_memory_bytes", None)] > 0
    assert ("process_cpu_seconds_total", None) in samples
    assert external_workers(conn) == [("stopped", 40)]
    assert assert_consistent(conn) == 40


# --- aidb.Worker in an application ---------------------------------------------------------------

def test_graceful_shutdown_mid_run_loses_nothing(cluster, dbname, conn, fake_model):
    # More keys than 2 slots can hold in flight (2 x 8 batches of 10).
    keys = 500
    create_docs(conn, numbered_docs(range(1, keys + 1)))
    create_pipeline(conn, auto_processing="Background", batch_size=10)
    embedded_before = fake_model.state()["inputs_embedded"]   # create_pipeline's probe
    fake_model.set_latency(300)             # ~10 batches in flight per 1.5 s across 2 slots
    worker = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], poll_interval=60, concurrency=2)

    def batches_in_flight():
        return wait_for(lambda: destination_count(conn) > 0
                        and fake_model.state()["in_flight"] >= 1,
                        message="batches in flight after the first commit")
    status, _ = asyncio.run(run_worker_during(worker, batches_in_flight))
    assert status == 0
    done = destination_keys(conn)
    # The batches in flight finished and committed: every key the server
    # embedded and the worker counted is in the destination, and every other
    # key is still pending.
    assert 0 < len(done) == worker.stats.keys_processed < keys
    assert fake_model.state()["inputs_embedded"] - embedded_before == len(done)
    assert pending(conn) == keys - len(done)
    assert_consistent(conn, except_keys=set(range(1, keys + 1)) - done)
    assert external_workers(conn) == [("stopped", len(done))]
    fake_model.set_latency(0)
    once = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], once=True)   # as --once
    assert asyncio.run(once.run()) == 0
    assert assert_consistent(conn) == keys


def test_worker_reconnects_when_its_connections_are_terminated(cluster, dbname, conn,
                                                                fake_model):
    create_docs(conn, numbered_docs(range(1, 21)))
    create_pipeline(conn, auto_processing="Background", batch_size=10)
    worker = aidb.Worker(cluster.dsn(dbname), poll_interval=0.5)

    def terminate_then_write():
        wait_for(lambda: destination_count(conn) == 20, message="the first 20 keys")
        terminated = conn.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'aidb external worker'"
        ).fetchone()[0]
        insert_docs(conn, numbered_docs(range(21, 41), prefix="after the reconnect"))
        wait_for(lambda: destination_count(conn) == 40, timeout=30,
                 message="the worker to reconnect and process the new keys")
        return terminated
    status, terminated = asyncio.run(run_worker_during(worker, terminate_then_write))
    assert terminated >= 1 and status == 0
    assert assert_consistent(conn) == 40


# --- several workers on one pipeline -------------------------------------------------------------

@pytest.mark.smoke
@pytest.mark.slow
def test_two_external_workers_and_a_background_worker_share_a_pipeline(
        cluster, dbname, conn, connect, fake_model, background_workers, tmp_path):
    create_docs(conn, numbered_docs(range(1, 101)))
    fake_model.set_latency(20)
    background = background_pipeline(conn, batch_size=5)
    process = start_cli("-d", cluster.dsn(dbname), "--poll-interval", "1s", cwd=tmp_path)
    worker = aidb.Worker(cluster.dsn(dbname), poll_interval=1, concurrency=2)
    writer_conn = connect()

    def write_and_watch():
        with ThreadPoolExecutor(1, thread_name_prefix="writer") as writer:
            writes = writer.submit(write_while_workers_keep_up,
                                   RandomWriter(writer_conn, seed=20261122, ids=range(1, 101)))
            wait_for(lambda: [s for s, _ in external_workers(conn)] == ["running", "running"],
                     message="aidb.workers to list both external workers as running")
            assert metrics(conn)["external workers"] == 2
            writes.result(timeout=CLI_TIMEOUT)      # and the writer's failure, if any
        wait_drained(conn)
        # A burst that outlasts a poll: the external workers poll every second
        # while the background worker is woken at each commit, so a backlog
        # that all three cannot drain in under a second (80 keys in flight at
        # 200 ms each: at most 400 keys/s) gives each external worker a claim.
        fake_model.set_latency(200)
        insert_docs(conn, numbered_docs(range(1001, 2001), prefix="burst"))
        wait_drained(conn)
    try:
        status, _ = asyncio.run(run_worker_during(worker, write_and_watch))
    finally:
        cli_status, stderr = stop_cli(process)
    assert status == 0 and cli_status == 0, stderr
    assert running_worker(conn) == background          # the background worker served throughout
    states = external_workers(conn)
    assert [s for s, _ in states] == ["stopped", "stopped"]
    assert metrics(conn)["external workers"] == 0
    # Each of the three did part of the work (the engine counts every worker's keys).
    everyone = conn.execute("SELECT keys_processed FROM aidb.pipeline_run_stats").fetchone()[0]
    assert all(keys > 0 for _, keys in states) and everyone > sum(k for _, k in states), states
    assert_consistent(conn)
