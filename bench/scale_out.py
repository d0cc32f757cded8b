#!/opt/aidb-dev-venv/bin/python
"""Scale-out: how the drain rate of one backlog grows with workers, against a
model server with latency and a limit on the requests it serves at once.

    /opt/aidb-dev-venv/bin/python bench/scale_out.py [--quick] [--rows 100000]
        [--latency-ms 50] [--server-slots 16] [--dims 384] [--batch 50]
        [--modes processes,concurrency,pipelines] [--counts 1,2,4,8,16]
        [--pipeline-counts 1,2,4,8] [--worker-arg ARG ...] [--guc NAME=VALUE ...]

One backlog of --rows ~60-word texts (drain.py's), drained three ways, each
count in a fresh database of one throwaway cluster:

- processes: N separate `aidb worker -i p --once -c 1` processes on one
  pipeline (left Disabled, so no background worker joins in);
- concurrency: one `aidb worker -i p --once -c N` process;
- pipelines: the rows split over N source tables, a pipeline each, all
  switched to Background together: N background workers.

The test server (tests/support/model_server.py, its own process, answers
cached) adds --latency-ms to every request and serves at most
--server-slots requests at once, queueing the rest in arrival order, as an
inference server with that many slots does.

Every worker is up before the clock starts: external workers are started
while the benchmark holds a lock on the backlog, which their first claim
waits for; once all of them wait, the lock is released. Background workers
start on empty tables and sleep; all the rows are then committed in one
transaction. Per run: rows/s (`steady`, first batch written to last;
`wall`, from the release to the last row), efficiency per worker (rate /
(N x the same mode's rate at N = 1)), and checks that must be 0: keys lost
(source keys with no destination row, or left in the backlog) and duplicate
writes (a statement trigger on each destination counts the rows written per
key; a key written twice is a duplicate). pg_stat_activity is sampled every
100 ms from another database: connections and transactions of the workers
at once, and their wait events (the top ones are reported; an external
worker's batch waiting for the model shows Client:ClientRead, idle in
transaction; a background worker calls the model inside its backend, so
there it is "active, no wait event", as is CPU). Per batch:
WAL bytes, records and full-page images (pg_stat_wal), row locks (the Heap
LOCK records pg_waldump counts between the run's first and last WAL
position), top-level statements (pg_stat_statements), commits, and CPU
milliseconds of PostgreSQL (every process of the cluster), of the workers
(external processes) and of the model server. bench/README.md turns these
into a model of where one PostgreSQL server stops scaling.

--worker-arg passes an argument to every `aidb worker` (e.g. a setting of
batches in flight, where the worker has one); --guc sets a server setting
for the whole cluster (e.g. the background workers' equivalent). Both add to
$AIDB_BENCH_WORKER_ARGS and $AIDB_BENCH_GUCS (bench/common.py), which
run_all.py sets for every benchmark.
"""

import argparse
import collections
import contextlib
import csv
import os
import resource
import subprocess
import sys
import tempfile
import threading

from common import (fresh_database, make_texts, model_server, new_figure, pg_cluster, ratio,
                    save_figure, standalone, stop_process, summary_row, utc_date, wait_for,
                    warm_cache)
from systems import (API_KEY, SERVER_MODEL, aidb_backlog_empty, aidb_pipeline, aidb_setup,
                     aidb_worker_command, create_docs, db_clock, drain_rates)

MODES = {"processes": "N external `aidb worker -c 1` processes",
         "concurrency": "one `aidb worker -c N` process",
         "pipelines": "N Background pipelines (rows split), their background workers"}
DRAIN_TIMEOUT = 3600
SAMPLE_SECONDS = 0.1
TEMPLATE = "scale_out_template"
WARM_UP = "a_warm_up"        # served before "p" in each pass (pipelines go by name)
WORKER_APP = "aidb external worker"          # application_name of `aidb worker` (worker.py)
BGWORKER_TYPE = "aidb pipeline worker"       # backend_type of a background worker (src/worker.c)
CLUSTER_SETTINGS = {
    "shared_preload_libraries": "'aidb,pg_stat_statements'",
    "max_connections": "200",
    "wal_keep_size": "'4GB'",                # pg_waldump reads the run's WAL after it
    "max_wal_size": "'4GB'",
}


def run(quick=False, rows=None, latency_ms=50, server_slots=16, dims=384, batch=50,
        modes=tuple(MODES), counts=(1, 2, 4, 8, 16), pipeline_counts=(1, 2, 4, 8),
        worker_args=(), gucs=()):
    """Every mode at every N against one server and one cluster: the result dict."""
    rows = rows or (4000 if quick else 100000)
    texts = make_texts(rows)
    settings = dict(CLUSTER_SETTINGS, **dict(g.split("=", 1) for g in gucs))
    runs = {mode: {} for mode in modes}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(model_server(API_KEY, max_concurrent=server_slots))
        print(f"scale_out: warming the server's cache with {rows} texts ...", flush=True)
        warm_cache(server.url, API_KEY, SERVER_MODEL, dims, texts, encodings=("base64",))
        server.set_latency(latency_ms)
        cluster = stack.enter_context(pg_cluster(settings))
        bench = ScaleOut(cluster, server, texts, dims, batch, list(worker_args),
                         stack.enter_context(tempfile.TemporaryDirectory(prefix="aidb-scale-out-")))
        if {"processes", "concurrency"} & set(modes):
            bench.make_template()
        for mode in modes:
            for n in (pipeline_counts if mode == "pipelines" else counts):
                result = getattr(bench, mode)(n)
                runs[mode][str(n)] = result
                print(f"scale_out: {mode} {n}: {result['steady_rows_per_s']} rows/s steady, "
                      f"{result['wall_rows_per_s']} wall, lost {result['lost_keys']}, "
                      f"duplicates {result['duplicate_writes']}, "
                      f"top wait {result['top_waits'][:1]}", flush=True)
            _add_efficiency(runs[mode])
    return {"name": "scale_out", "date": utc_date(),
            "parameters": {"rows": rows, "words_per_text": 60, "latency_ms": latency_ms,
                           "server_slots": server_slots, "dims": dims, "batch_size": batch,
                           "counts": list(counts), "pipeline_counts": list(pipeline_counts),
                           "worker_args": list(worker_args), "gucs": list(gucs),
                           "server_model": SERVER_MODEL},
            "runs": runs, "checks": _checks(runs), "summary": _summary(runs)}


class ScaleOut:
    """The runs. Every worker is started and connected before the clock
    starts, so that worker start-up (a Python process loading the engine, 16
    of them sharing the cores) is not in the figures: external workers wait
    in their first claim for a lock the benchmark holds on the backlog,
    background workers sleep until the rows are committed."""

    def __init__(self, cluster, server, texts, dims, batch, worker_args, scratch):
        self.cluster, self.server, self.texts = cluster, server, texts
        self.dims, self.batch, self.worker_args, self.scratch = dims, batch, worker_args, scratch

    def make_template(self):
        """A database with the source table and a Disabled pipeline on it
        (served by `aidb worker -i p` only) whose backlog holds every row:
        each external run copies it (CREATE DATABASE ... TEMPLATE)."""
        import psycopg
        self.cluster.psql(f"CREATE DATABASE {TEMPLATE}")
        with psycopg.connect(self.cluster.dsn(TEMPLATE), autocommit=True) as conn:
            aidb_setup(conn, self.server.url, self.dims)
            conn.execute("CREATE EXTENSION pg_stat_statements")
            create_docs(conn, self.texts)
            _count_writes(conn, aidb_pipeline(conn, "p", batch_size=self.batch))
            create_docs(conn, [], table="warm_up")
            aidb_pipeline(conn, WARM_UP, source="warm_up", batch_size=1)
            conn.execute("VACUUM ANALYZE")

    def processes(self, n):
        """N separate `aidb worker -c 1` processes."""
        return self._external(f"processes_{n}", [1] * n)

    def concurrency(self, n):
        """One `aidb worker -c N` process."""
        return self._external(f"concurrency_{n}", [n])

    def pipelines(self, n):
        """N Background pipelines on empty tables; their workers start, embed
        one warm-up row each and sleep; then every table's rows are
        committed at once."""
        import psycopg
        dbname, share = f"pipelines_{n}", len(self.texts) // n
        names = [f"p{k}" for k in range(n)]
        with fresh_database(self.cluster, dbname) as dsn, \
                psycopg.connect(dsn, autocommit=True) as conn:
            aidb_setup(conn, self.server.url, self.dims)
            conn.execute("CREATE EXTENSION pg_stat_statements")
            loads, destinations = [], []
            for k, name in enumerate(names):
                create_docs(conn, [], table=f"docs_{k}")
                destinations.append(aidb_pipeline(conn, name, source=f"docs_{k}",
                                                  batch_size=self.batch, mode="Background"))
                _count_writes(conn, destinations[-1])
                loads.append((f"docs_{k}", self.texts[k * share:(k + 1) * share]))
            _wait_for_sessions(conn, n)
            _warm_up_background(conn, [t for t, _ in loads], destinations, self.texts[0])
            return self._measure(conn, dbname, n, lambda: _load(conn, loads),
                                 [(t, d) for (t, _), d in zip(loads, destinations)], names)

    def _external(self, dbname, slots):
        """One `aidb worker --once -c S` process per entry of `slots`."""
        import psycopg
        _copy_database(self.cluster, TEMPLATE, dbname)
        dsn = self.cluster.dsn(dbname)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn, psycopg.connect(dsn) as gate:
                destination, backlog = conn.execute(
                    "SELECT destination::text, format('aidb.%I', '_backlog_' || id) "
                    "FROM aidb.pipeline_registry WHERE name = 'p'").fetchone()
                gate.execute(f"LOCK TABLE {backlog} IN ACCESS EXCLUSIVE MODE")
                _load(conn, [("warm_up", self.texts[:sum(slots)])])
                with self._workers(dbname, slots) as processes:
                    _wait_for_sessions(conn, sum(slots), processes, waiting=True)
                    # Warmed up: gone from the workers' passes from now on.
                    conn.execute("SELECT aidb.delete_pipeline(%s, drop_destination => true)",
                                 (WARM_UP,))
                    return self._measure(conn, dbname, sum(slots), gate.commit,
                                         [("docs", destination)], ["p"], processes)
        finally:
            self.cluster.psql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")

    @contextlib.contextmanager
    def _workers(self, dbname, slots):
        """The `aidb worker --once` processes; killed if still running at the end.
        They serve WARM_UP too, whose backlog holds one single-row batch per
        slot: each slot's first batch (model client created, engine code
        loaded: most of a CPU-second) is that one, before it blocks on p.
        The warm-up pipeline is deleted before the clock starts."""
        log_path = os.path.join(self.scratch, f"{dbname}.log")
        with open(log_path, "ab") as log:
            processes = [subprocess.Popen(
                aidb_worker_command(self.cluster.dsn(dbname), "p", c) + ["-i", WARM_UP]
                + self.worker_args,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL) for c in slots]
            processes_log[id(processes)] = log_path
            try:
                yield processes
            finally:
                for process in processes:
                    stop_process(process)
                processes_log.pop(id(processes), None)

    def _measure(self, conn, dbname, workers, go, sources, names, processes=()):
        """Start the drain with go() and measure it until every backlog of
        `names` is empty; `sources` are (source, destination) pairs."""
        conn.execute("CHECKPOINT")
        latency = self.server.state()["latency_ms"]
        self.server.reset()                  # counters and peaks from 0; the slot limit stays
        self.server.set_latency(latency)
        with ActivitySampler(self.cluster.dsn("postgres"), dbname) as activity:
            go()
            started = db_clock(conn)
            conn.execute("SELECT pg_stat_statements_reset()")
            before = _counters(conn, self.cluster, self.server, processes)
            wait_for(lambda: _drained(conn, names, processes), timeout=DRAIN_TIMEOUT,
                     interval=0.2, message="the workers to drain the backlog")
            _wait_workers(processes)          # reaped: their CPU is counted
            after = _counters(conn, self.cluster, self.server, ())
        state = self.server.state()
        result = _drain_rates(conn, [d for _, d in sources], started, self.batch)
        result.update(workers=workers, **_consistency(conn, sources))
        # Texts the server embedded beyond one per row: requests repeated
        # after a rollback (not a duplicate write, but work done twice).
        result["model_inputs_extra"] = state["inputs_embedded"] - result["rows"]
        result["server_peak_active"] = state["peak_active"]
        result["server_peak_queued"] = state["peak_queued"]
        result.update(activity.summary())
        result["per_batch"] = _per_batch(conn, self.cluster, before, after,
                                         result["rows"] / self.batch)
        return result


processes_log = {}      # id(list of worker processes) -> their log file


def _wait_for_sessions(conn, count, processes=(), waiting=False):
    """Until `count` worker sessions (external or background) are connected
    (and, `waiting`, each waits for a lock: the backlog's, in its first claim)."""
    def connected():
        for process in processes:
            if process.poll() is not None:
                raise RuntimeError(f"aidb worker exited at start-up with {process.returncode}:\n"
                                   f"{_log_tail(processes)}")
        return conn.execute("SELECT count(*) >= %s FROM pg_stat_activity "
                            "WHERE datname = current_database() "
                            "AND (application_name = %s OR backend_type = %s) "
                            "AND (NOT %s OR wait_event_type = 'Lock')",
                            (count, WORKER_APP, BGWORKER_TYPE, waiting)).fetchone()[0]
    wait_for(connected, timeout=300, interval=0.2, message=f"{count} workers to connect")


def _warm_up_background(conn, tables, destinations, text):
    """One row of key 0 in every table, and wait until each is embedded: a
    background worker's first batch creates its model client (most of a
    CPU-second). Rates count keys > 0 only."""
    with conn.transaction():
        for table in tables:
            conn.execute(f"INSERT INTO {table} (id, body) VALUES (0, %s)", (text,))
    wait_for(lambda: all(conn.execute(f"SELECT EXISTS (SELECT FROM {d} WHERE source_key = 0)")
                         .fetchone()[0] for d in destinations),
             timeout=300, interval=0.2, message="the background workers' warm-up rows")


def _load(conn, loads):
    """Every source's rows in ONE transaction: the backlogs fill at its commit."""
    from psycopg import sql
    with conn.transaction():
        for table, texts in loads:
            with conn.cursor() as cur, cur.copy(sql.SQL("COPY {} (id, body) FROM STDIN").format(
                    sql.Identifier(table))) as copy:
                for i, text in enumerate(texts, start=1):
                    copy.write_row((i, text))


def _drained(conn, names, processes):
    """Every backlog is empty (its last batch committed). A worker that
    failed, or a failed batch of a background worker, is an error."""
    for process in processes:
        if process.poll():
            raise RuntimeError(f"aidb worker exited with {process.returncode} during the drain:"
                               f"\n{_log_tail(processes)}")
    errors = conn.execute("SELECT string_agg(DISTINCT message, '; ') FROM aidb.pipeline_errors "
                          "WHERE pipeline = ANY (%s)", (list(names),)).fetchone()[0]
    if errors:
        raise RuntimeError(f"a batch failed: {errors}")
    return aidb_backlog_empty(conn, names)


def _wait_workers(processes):
    """`aidb worker --once` exits once nothing is pending: all must exit 0."""
    statuses = [process.wait(timeout=300) for process in processes]
    if any(statuses):
        raise RuntimeError(f"aidb worker exited with {statuses}:\n{_log_tail(processes)}")


def _log_tail(processes):
    """The end of the workers' shared log, for error messages."""
    path = processes_log.get(id(processes))
    if not path:
        return ""
    with open(path, errors="replace") as f:
        return f.read()[-3000:]


# --- consistency ------------------------------------------------------------------------------

def _count_writes(conn, destination):
    """A statement trigger on the destination that logs each key written."""
    conn.execute("CREATE UNLOGGED TABLE IF NOT EXISTS public.bench_writes "
                 "(destination text, key int)")
    # Qualified: aidb writes destinations with search_path = pg_catalog, pg_temp.
    conn.execute("""
        CREATE OR REPLACE FUNCTION public.bench_log_writes() RETURNS trigger
        LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            INSERT INTO public.bench_writes SELECT TG_TABLE_NAME, source_key FROM written;
            RETURN NULL;
        END $$""")
    conn.execute(f"CREATE TRIGGER bench_log_writes AFTER INSERT ON {destination} "
                 "REFERENCING NEW TABLE AS written FOR EACH STATEMENT "
                 "EXECUTE FUNCTION public.bench_log_writes()")


def _consistency(conn, sources):
    """Keys lost (no destination row, or still queued) and duplicate writes."""
    lost = sum(conn.execute(f"SELECT count(*) FROM {source} s WHERE NOT EXISTS "
                            f"(SELECT FROM {dest} d WHERE d.source_key = s.id)").fetchone()[0]
               for source, dest in sources)
    backlog = sum(conn.execute(f'SELECT count(*) FROM aidb."_backlog_{i}"').fetchone()[0]
                  for (i,) in conn.execute("SELECT id FROM aidb.pipeline_registry").fetchall())
    writes, keys = conn.execute("SELECT count(*), count(DISTINCT (destination, key)) "
                                "FROM bench_writes").fetchone()
    return {"lost_keys": lost, "backlog_left": backlog, "duplicate_writes": writes - keys,
            "keys_written": keys}


def _drain_rates(conn, destinations, started, batch):
    spans = [conn.execute(f"SELECT count(*), extract(epoch FROM min(bench_written_at)), "
                          f"extract(epoch FROM max(bench_written_at)) FROM {d} "
                          "WHERE source_key > 0").fetchone()     # not the warm-up rows
             for d in destinations]
    rows = sum(s[0] for s in spans)
    first = min(float(s[1]) for s in spans)
    last = max(float(s[2]) for s in spans)
    return drain_rates(rows, started, first, last, batch)


# --- database counters ------------------------------------------------------------------------

def _counters(conn, cluster, server, processes):
    """Where WAL stands, and CPU seconds so far: the cluster's, the model
    server's, and the workers' (reaped children plus the live `processes`)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"lsn": conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()[0],
            "postgres_cpu": _cluster_cpu_seconds(cluster),
            "workers_cpu": children.ru_utime + children.ru_stime
            + sum(_cpu_seconds(p.pid) for p in processes),
            "server_cpu": _cpu_seconds(server.pid)}


# WAL record types counted per batch (pg_waldump --stats=record names).
WAL_COUNTS = {"row_locks": ("Heap/LOCK",), "commits": ("Transaction/COMMIT",),
              "rollbacks": ("Transaction/ABORT",), "heap_inserts": ("Heap/INSERT",),
              "heap_updates": ("Heap/UPDATE", "Heap/HOT_UPDATE"), "heap_deletes": ("Heap/DELETE",)}


def _per_batch(conn, cluster, before, after, batches):
    """Per batch of drained rows (rows / batch size): WAL from the records
    themselves (pg_waldump between the two positions: background workers'
    pg_stat_wal counts reach the view late), statements, CPU."""
    def per(value, scale=1):
        return None if value is None else round(value * scale / batches, 2)
    statements = conn.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s "
                              "JOIN pg_database d ON d.oid = s.dbid "
                              "WHERE d.datname = current_database() "
                              "AND s.query NOT LIKE '%pg_stat%'").fetchone()[0]
    wal_bytes = conn.execute("SELECT pg_wal_lsn_diff(%s, %s)::bigint",
                             (after["lsn"], before["lsn"])).fetchone()[0]
    conn.execute("SELECT pg_switch_wal()")      # the run's last records reach the files
    records, total = _wal_records(cluster, before["lsn"], after["lsn"])
    result = {"batches": round(batches, 1), "wal_bytes": per(wal_bytes),
              "wal_records": per(total.get("records")), "wal_fpi_bytes": per(total.get("fpi_bytes")),
              "statements": per(float(statements)),
              **{name: per(sum(records.get(t, 0) for t in types)) if records else None
                 for name, types in WAL_COUNTS.items()},
              **{f"{k}_ms": per(after[k] - before[k], 1000)
                 for k in ("postgres_cpu", "workers_cpu", "server_cpu")}}
    result["wal_record_types"] = {t: per(n) for t, n in sorted(records.items(),
                                                               key=lambda i: -i[1])[:12]}
    return result


def _wal_records(cluster, start, end):
    """({record type: count}, {records, fpi_bytes}) between two WAL positions
    by pg_waldump --stats=record; empty dicts if it cannot tell."""
    command = [os.path.join(cluster.bindir, "pg_waldump"), "--stats=record",
               "-p", os.path.join(cluster.datadir, "pg_wal"), "-s", start, "-e", end]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=600).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}, {}
    records, total = {}, {}
    for line in out.splitlines():
        words = line.split()
        if len(words) > 2 and "/" in words[0] and words[1].isdigit():
            records[words[0]] = int(words[1])
        elif words[:1] == ["Total"] and len(words) > 4:
            # Total  N  record-bytes [%]  FPI-bytes [%]  combined [%]
            numbers = [w for w in words[1:] if w.isdigit()]
            total = {"records": int(numbers[0]), "fpi_bytes": int(numbers[2])}
    return records, total


def _cluster_cpu_seconds(cluster):
    """CPU seconds of the whole cluster: the postmaster, its live children,
    and its children that exited (counted in its cutime/cstime once reaped)."""
    with open(os.path.join(cluster.datadir, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    total = _cpu_seconds(postmaster, children=True)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                if _stat_fields(int(entry))[1] == str(postmaster):
                    total += _cpu_seconds(int(entry))
    return total


def _stat_fields(pid):
    """/proc/PID/stat after the command name: state, ppid, ..."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def _cpu_seconds(pid, children=False):
    """utime + stime (+ cutime + cstime of reaped children) of a process."""
    fields = _stat_fields(pid)
    ticks = sum(int(fields[i]) for i in ((11, 12, 13, 14) if children else (11, 12)))
    return ticks / os.sysconf("SC_CLK_TCK")


def _copy_database(cluster, template, name):
    """CREATE DATABASE name TEMPLATE template, retried while a short-lived
    session (aidb's discovery worker, say) is connected to the template."""
    def attempt():
        try:
            cluster.psql(f"CREATE DATABASE {name} TEMPLATE {template}")
            return True
        except RuntimeError as exc:
            if "is being accessed by other users" not in str(exc):
                raise
            return False
    wait_for(attempt, timeout=120, interval=0.5, message=f"a copy of {template}")


# --- pg_stat_activity -------------------------------------------------------------------------

class ActivitySampler:
    """Samples the workers' sessions in pg_stat_activity every SAMPLE_SECONDS
    from a connection to another database, while the block runs."""

    QUERY = ("SELECT state, xact_start IS NOT NULL, coalesce(wait_event_type || ':' || wait_event, "
             "CASE WHEN state = 'active' THEN 'active, no wait event' ELSE 'none' END), left(query, 70) "
             "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
             "AND (application_name = %s OR backend_type = %s)")

    def __init__(self, dsn, dbname):
        self.dsn, self.dbname = dsn, dbname
        self.samples = 0
        self.connections = collections.Counter()     # sessions seen at once -> samples
        self.in_transaction = collections.Counter()
        self.waits = collections.Counter()            # wait of a session in a batch -> count
        self.lock_waits = collections.Counter()       # query of a session waiting for a lock
        self._stop = threading.Event()

    def __enter__(self):
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _sample(self):
        import psycopg
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self._stop.wait(SAMPLE_SECONDS):
                rows = conn.execute(self.QUERY, (self.dbname, WORKER_APP, BGWORKER_TYPE)).fetchall()
                self._record(rows)

    def _record(self, rows):
        self.samples += 1
        self.connections[len(rows)] += 1
        busy = [r for r in rows if r[1]]            # in a transaction: in a batch
        self.in_transaction[len(busy)] += 1
        for _, _, wait, query in busy:
            self.waits[wait] += 1
            if wait.startswith("Lock:"):
                self.lock_waits[f"{wait} {query}"] += 1

    def summary(self):
        total = sum(self.waits.values()) or 1
        return {"samples": self.samples,
                "max_connections": max(self.connections, default=0),
                "max_in_transaction": max(self.in_transaction, default=0),
                "mean_in_transaction": round(sum(k * v for k, v in self.in_transaction.items())
                                             / max(1, self.samples), 2),
                "top_waits": [[w, round(c / total, 3)] for w, c in self.waits.most_common(5)],
                "top_lock_waits": [[w, c] for w, c in self.lock_waits.most_common(3)]}


# --- results ----------------------------------------------------------------------------------

def _add_efficiency(mode_runs):
    """Efficiency per worker: rate / (N x the rate at N = 1), steady and wall."""
    base = mode_runs.get("1")
    for n, r in mode_runs.items():
        for kind in ("steady", "wall"):
            one = base and base[f"{kind}_rows_per_s"]
            r[f"{kind}_efficiency"] = ratio(r[f"{kind}_rows_per_s"], one and one * int(n))


def _checks(runs):
    """What must hold in every run: nothing lost or written twice, and
    bookkeeping that does not serialise workers."""
    every = [r for mode in runs.values() for r in mode.values()]
    return {"lost_keys": sum(r["lost_keys"] + r["backlog_left"] for r in every),
            "duplicate_writes": sum(r["duplicate_writes"] for r in every),
            "transactionid_lock_top_wait": [f"{m} {n}" for m, mr in runs.items()
                                            for n, r in mr.items()
                                            if r["top_waits"][:1]
                                            and r["top_waits"][0][0] == "Lock:transactionid"],
            "concurrency_connections": {n: r["max_connections"]
                                        for n, r in runs.get("concurrency", {}).items()},
            "concurrency_batches_at_once": {n: r["max_in_transaction"]
                                            for n, r in runs.get("concurrency", {}).items()}}


def _summary(runs):
    rows = []
    for mode, mode_runs in runs.items():
        for n, r in mode_runs.items():
            waits = ", ".join(f"{w} {share:.0%}" for w, share in r["top_waits"][:2])
            rows.append(summary_row(
                "scale_out", f"{MODES[mode].replace('N', n, 1)}: rows/s steady / wall, "
                "efficiency", f"{r['steady_rows_per_s']:.0f} / {r['wall_rows_per_s']:.0f}, "
                f"{r['steady_efficiency']}", "", ""))
            rows.append(summary_row(
                "scale_out", f"{mode} {n}: lost / duplicates; connections, batches at once; "
                "top waits", f"{r['lost_keys'] + r['backlog_left']} / {r['duplicate_writes']}; "
                f"{r['max_connections']}, {r['max_in_transaction']}; {waits}",
                "0 / 0", "yes" if not (r['lost_keys'] + r['backlog_left'] + r['duplicate_writes'])
                else "no"))
    return rows


def plot(result, path):
    """Rows/s and efficiency per mode against N; the runs as CSV beside the PNG."""
    fig, (rate_ax, eff_ax) = new_figure(11, 4, ncols=2)
    for mode, mode_runs in result["runs"].items():
        ns = sorted(mode_runs, key=int)
        rate_ax.plot([int(n) for n in ns], [mode_runs[n]["steady_rows_per_s"] for n in ns],
                     marker="o", label=MODES[mode])
        eff_ax.plot([int(n) for n in ns], [mode_runs[n]["steady_efficiency"] for n in ns],
                    marker="o", label=mode)
    for ax, label in ((rate_ax, "rows / s, steady"), (eff_ax, "efficiency per worker")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("N")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    eff_ax.axhline(1.0, color="gray", linewidth=0.8)
    p = result["parameters"]
    fig.suptitle(f"Scale-out: {p['rows']} rows, {p['latency_ms']:g} ms latency, "
                 f"{p['server_slots']} server slots, batch {p['batch_size']}, {p['dims']} dims",
                 fontsize=10)
    save_figure(fig, path)
    write_csv(result, os.path.splitext(path)[0] + ".csv")


CSV_COLUMNS = ("steady_rows_per_s", "wall_rows_per_s", "steady_efficiency", "wall_efficiency",
               "lost_keys", "backlog_left", "duplicate_writes", "model_inputs_extra",
               "max_connections", "max_in_transaction", "server_peak_active",
               "server_peak_queued")


def write_csv(result, path):
    """One line per mode and N: the rates, the checks and the per-batch costs."""
    per_batch = sorted({k for mode in result["runs"].values() for r in mode.values()
                        for k, v in r["per_batch"].items() if not isinstance(v, dict)})
    with open(path, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["mode", "n", *CSV_COLUMNS, "top_wait",
                      *(f"per_batch_{k}" for k in per_batch)])
        for mode, mode_runs in result["runs"].items():
            for n, r in mode_runs.items():
                top = r["top_waits"][0][0] if r["top_waits"] else ""
                out.writerow([mode, n, *(r[c] for c in CSV_COLUMNS), top,
                              *(r["per_batch"].get(k) for k in per_batch)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4,000 rows instead of 100,000")
    parser.add_argument("--rows", type=int, help="rows in the backlog (overrides --quick)")
    parser.add_argument("--latency-ms", type=float, default=50, help="server latency (50)")
    parser.add_argument("--server-slots", type=int, default=16,
                        help="requests the server serves at once; the rest queue (16)")
    parser.add_argument("--dims", type=int, default=384, help="vector size (384)")
    parser.add_argument("--batch", type=int, default=50, help="rows per batch (50)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"comma-separated, of {', '.join(MODES)} (all)")
    parser.add_argument("--counts", default="1,2,4,8,16",
                        help="N for processes and concurrency (1,2,4,8,16)")
    parser.add_argument("--pipeline-counts", default="1,2,4,8", help="N for pipelines (1,2,4,8)")
    parser.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to every `aidb worker` (repeatable; use --worker-arg=-x)")
    parser.add_argument("--guc", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting for the cluster (repeatable)")
    args = parser.parse_args()
    modes = tuple(m.strip() for m in args.modes.split(","))
    unknown = set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown mode {sorted(unknown)[0]!r}: use {', '.join(MODES)}")
    standalone(sys.modules[__name__], {
        "rows": args.rows, "latency_ms": args.latency_ms, "server_slots": args.server_slots,
        "dims": args.dims, "batch": args.batch, "modes": modes,
        "counts": tuple(int(c) for c in args.counts.split(",")),
        "pipeline_counts": tuple(int(c) for c in args.pipeline_counts.split(",")),
        "worker_args": tuple(args.worker_arg), "gucs": tuple(args.guc)}, args.quick)


if __name__ == "__main__":
    sys.exit(main())
