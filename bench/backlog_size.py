#!/opt/aidb-dev-venv/bin/python
"""Backlog size: does the cost of a key stay the same when the backlog grows
from 10,000 to 1,000,000 keys, and does the lock table stay flat?

    /opt/aidb-dev-venv/bin/python bench/backlog_size.py [--quick] [--sizes 10k,100k,1M]
        [--modes run_pipeline,background] [--pipelines model,chunk] [--batch 100] [--dims 8]

For every backlog size, pipeline kind and drain mode, in a fresh database of
one throwaway cluster (default settings: max_locks_per_transaction 64):

- the source `docs(id int PRIMARY KEY, body text)` gets N short texts
  (10-20 words, generated in SQL) after a Disabled pipeline was created on
  it, so the capture trigger has queued every key: the backlog holds N rows;
- pipeline kinds: `model` (KnowledgeBase on the OpenAI-compatible test
  server, tests/support/model_server.py in its own process, 8-dimension
  vectors, no latency, no vector index: the headline) and `chunk`
  (ChunkText only, no model: aidb's own cost alone: claims, key locks,
  source reads, destination writes);
- drain modes: `run_pipeline` (`BEGIN; SELECT aidb.run_pipeline('p');
  COMMIT`: every batch in ONE transaction, one savepoint each) and
  `background` (the pipeline switched to Background; its worker commits
  after each batch).

Measured: the drain's total time (run_pipeline: the statement and its
COMMIT; background: from the switch to the last row written, the worker's
start-up included), time per key, rows/s, the time per key of the steady
part (first row written to last), the rate of each tenth of the drain (from
the destination rows' `bench_written_at`, clock_timestamp(): a rate that
falls from the first tenth to the last means a batch costs more as the run
goes on), and the CPU time per key of the draining backend (/proc: user +
system, all its threads; start-up left out), which other jobs on the
machine disturb far less than the wall clock. Every ~50 ms another
connection samples pg_locks: the whole table's entries (`count(*)`,
fast-path ones included), the draining backend's, and the draining
backend's that are not fast-path (those live in the shared lock table,
sized by max_locks_per_transaction). The peaks are reported. Ratios: time
per key at each size over time per key at the smallest one (1.0 = flat).

Sizes up to 100,000 keys are drained --repeat times (default 3) and the
fastest attempt counts (every attempt is kept in the JSON); 1,000,000 once.

Benchmarks are not tests: nothing here checks a speed.
"""

import argparse
import contextlib
import os
import signal
import sys
import threading

from common import (MODEL_SERVER, connect, fresh_database, model_server, new_figure, pg_cluster,
                    ratio, save_figure, standalone, summary_row, utc_date, wait_for)
from systems import (AIDB_MODEL, API_KEY, add_written_at, aidb_backlog_empty, aidb_pipeline,
                     aidb_set_mode, aidb_setup, db_clock)

DEFAULT_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (10_000, 100_000)
MODES = {"run_pipeline": "run_pipeline, one transaction", "background": "Background worker"}
PIPELINES = {"model": "KnowledgeBase, test server (8 dims)", "chunk": "ChunkText only"}
SAMPLE_SECONDS = 0.05
# Sizes up to this many keys are drained `repeat` times and the fastest
# attempt counts (they are cheap, and the most exposed to other jobs' noise
# on a shared machine); larger ones once.
REPEAT_UP_TO = 100_000
DRAIN_TIMEOUT = 4 * 3600

# Texts made by the database itself (a million rows through COPY would time
# the client): 10 to 20 words, distinct through the id.
WORDS = ("the a one every small large quiet old new red green bright dark cat dog bird child "
         "teacher farmer city river garden kitchen market library station mountain forest "
         "window table letter song story road walks runs reads writes sings builds opens "
         "near under over beside behind through morning evening winter summer rain snow "
         "wind light music coffee bread water quickly slowly often").split()
FILL_SOURCE = """
    INSERT INTO docs (id, body)
    SELECT g, 'Document ' || g || ': ' ||
              (SELECT string_agg(w.words[1 + (g * 7 + i * 13) %% array_length(w.words, 1)], ' ')
               FROM generate_series(1, 10 + g %% 11) AS i)
    FROM generate_series(1, %s) AS g, (SELECT %s::text[] AS words) AS w"""


def run(quick=False, sizes=None, modes=tuple(MODES), pipelines=tuple(PIPELINES), batch=100, dims=8,
        repeat=3):
    sizes = tuple(sizes or (QUICK_SIZES if quick else DEFAULT_SIZES))
    load_before = round(os.getloadavg()[0], 2)
    runs = {}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(model_server(API_KEY, dims=dims, cache=False))
        cluster = stack.enter_context(pg_cluster())
        settings = _settings(cluster)
        for size in sizes:
            for kind in pipelines:
                for mode in modes:
                    label = f"{kind}/{mode}"
                    attempts = []
                    for _ in range(repeat if size <= REPEAT_UP_TO else 1):
                        print(f"backlog_size: {size} keys, {label} ...", flush=True)
                        attempts.append(drain(cluster, server, size, kind, mode, batch, dims))
                        _print(size, label, attempts[-1])
                    # The fastest attempt counts: other jobs only ever slow a run down.
                    best = dict(min(attempts, key=lambda a: a["us_per_key"]))
                    best["attempts"] = [{k: a[k] for k in ("us_per_key", "cpu_us_per_key",
                                                           "server_cpu_us_per_key",
                                                           "loadavg_1min_after")} for a in attempts]
                    runs.setdefault(label, {})[str(size)] = best
    return {"name": "backlog_size", "date": utc_date(),
            "parameters": {"sizes": list(sizes), "modes": list(modes), "pipelines": list(pipelines),
                           "batch_size": batch, "dims": dims, "server_latency_ms": 0,
                           "sample_seconds": SAMPLE_SECONDS, "words_per_text": "10-20",
                           "repeat": repeat, "repeat_up_to_keys": REPEAT_UP_TO,
                           "postgres": settings},
            "loadavg_1min_before": load_before,
            "runs": runs, "ratios": _ratios(runs), "summary": _summary(runs, sizes)}


def _print(size, label, r):
    print(f"backlog_size: {size} keys, {label}: {r['seconds']} s, {r['us_per_key']} us/key "
          f"({r['cpu_us_per_key']} us CPU of the drainer, {r['server_cpu_us_per_key']} of the "
          f"server), {r['rows_per_s']} rows/s; "
          f"lock table peak {r['locks']['peak_all']} (the drainer's {r['locks']['peak_own']}, "
          f"{r['locks']['peak_own_shared']} not fast-path); load {r['loadavg_1min_after']}",
          flush=True)


def model_server_pid():
    """The test server's process: this process's child running model_server.py."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == os.getpid() and MODEL_SERVER.encode() in cmdline:
            return int(entry)
    return None


def cpu_seconds(pid):
    """User + system CPU time of a process (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _settings(cluster):
    with connect(cluster, "postgres") as conn:
        names = ("server_version", "max_locks_per_transaction", "max_connections",
                 "max_prepared_transactions", "autovacuum_max_workers", "max_worker_processes",
                 "max_wal_senders", "shared_buffers")
        return {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in names}


def lock_table_capacity(settings):
    """Entries of the shared lock table: max_locks_per_transaction times the
    backends and prepared transactions it is sized for (None if unknown)."""
    try:
        backends = sum(int(settings[name]) for name in (
            "max_connections", "autovacuum_max_workers", "max_worker_processes",
            "max_wal_senders", "max_prepared_transactions")) + 1
        return int(settings["max_locks_per_transaction"]) * backends
    except KeyError:
        return None


def drain(cluster, server, size, kind, mode, batch, dims):
    """One drain of a backlog of `size` keys in a fresh database."""
    dbname = f"backlog_{kind}_{mode}_{size}"
    with fresh_database(cluster, dbname), connect(cluster, dbname) as conn, \
            connect(cluster, dbname) as monitor:
        conn.execute("SET client_min_messages = warning")
        destination = _backlog(conn, server, size, kind, batch, dims)
        server_pid = model_server_pid()
        server_cpu = cpu_seconds(server_pid) if server_pid else None
        if mode == "run_pipeline":
            timing, sampler = _run_pipeline(conn, monitor)
        else:
            timing, sampler = _background(conn, monitor, dbname, destination, size)
        rows, first, last = conn.execute(
            f"SELECT count(DISTINCT source_key), extract(epoch FROM min(bench_written_at)), "
            f"extract(epoch FROM max(bench_written_at)) FROM {destination}").fetchone()
        if rows != size:
            raise AssertionError(f"{destination} has {rows} keys, expected {size}")
        if timing.get("end") is None:           # background: the last row's write time
            timing["end"] = float(last)
        seconds = timing["end"] - timing["start"]
        steady = (size - batch) / (float(last) - float(first)) if last > first else None
        whole_cpu = round(timing.pop("cpu_seconds") / size * 1e6, 1)
        return {"keys": size, "seconds": round(seconds, 3),
                "us_per_key": round(seconds / size * 1e6, 1),
                "rows_per_s": round(size / seconds, 1),
                "steady_us_per_key": steady and round(1e6 / steady, 1),
                "steady_rows_per_s": steady and round(steady, 1),
                "startup_seconds": round(float(first) - timing["start"], 3),
                # The drainer's CPU per key, its start-up left out (run_pipeline's
                # session loaded the engine before; a worker's is counted from
                # its first batch written), and with it.
                "cpu_us_per_key": timing.pop("steady_cpu_us_per_key", None) or whole_cpu,
                "cpu_us_per_key_with_startup": whole_cpu,
                "server_cpu_us_per_key": server_cpu is not None and kind == "model" and round(
                    (cpu_seconds(server_pid) - server_cpu) / size * 1e6, 1) or None,
                "tenths_rows_per_s": _tenths(conn, destination, size),
                **{k: v for k, v in timing.items() if k not in ("start", "end")},
                "locks": sampler.result(),
                "loadavg_1min_after": round(os.getloadavg()[0], 2)}


def _backlog(conn, server, size, kind, batch, dims):
    """The model (if any), the source table, a Disabled pipeline 'p' on it,
    then `size` rows: the backlog holds every key. Returns the destination."""
    aidb_setup(conn, server.url, dims)
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text NOT NULL)")
    if kind == "model":
        destination = aidb_pipeline(conn, "p", batch_size=batch)
    else:
        conn.execute("""
            SELECT aidb.create_pipeline(name => 'p', source => 'docs', source_key_column => 'id',
                source_data_column => 'body', step_1 => 'ChunkText',
                step_1_options => aidb.chunk_text_config(1000), batch_size => %s)""", (batch,))
        destination = conn.execute(
            "SELECT destination::text FROM aidb.pipelines WHERE name = 'p'").fetchone()[0]
        add_written_at(conn, destination)
    conn.execute(FILL_SOURCE, (size, WORDS))
    conn.execute("VACUUM ANALYZE docs")
    backlog_id = conn.execute("SELECT id FROM aidb.pipeline_registry WHERE name = 'p'").fetchone()[0]
    conn.execute(f'VACUUM ANALYZE aidb."_backlog_{backlog_id}"')
    conn.execute("CHECKPOINT")
    return destination


def _run_pipeline(conn, monitor):
    """aidb.run_pipeline in one transaction, sampled from `monitor`."""
    pid = conn.info.backend_pid
    # The engine and the model's client are loaded once per session: not timed.
    conn.execute("SELECT aidb.encode_text(%s, 'warm up')", (AIDB_MODEL,))
    with LockSampler(monitor, lambda: pid) as sampler:
        cpu = cpu_seconds(pid)
        conn.execute("BEGIN")
        start = db_clock(conn)
        conn.execute("SELECT aidb.run_pipeline('p')")
        ran = db_clock(conn)
        own_at_end = conn.execute("SELECT count(*) FROM pg_locks WHERE pid = %s", (pid,)).fetchone()[0]
        conn.execute("COMMIT")
        end = db_clock(conn)
        cpu = cpu_seconds(pid) - cpu
    return {"start": start, "end": end, "cpu_seconds": cpu, "commit_seconds": round(end - ran, 3),
            "own_locks_at_end": own_at_end}, sampler


def _background(conn, monitor, dbname, destination, size):
    """The pipeline switched to Background; done when the backlog is empty
    (its worker commits each batch). Sampled from `monitor`."""
    def worker_pid():
        row = monitor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND "
                              "backend_type = 'aidb pipeline worker'", (dbname,)).fetchone()
        return row and row[0]
    def rows_written():
        return monitor.execute(f"SELECT count(*) FROM {destination}").fetchone()[0]
    with LockSampler(monitor, worker_pid, rows_written) as sampler:
        start = aidb_set_mode(conn, ["p"], "Background")
        wait_for(lambda: aidb_backlog_empty(conn, ["p"]), timeout=DRAIN_TIMEOUT, interval=0.5,
                 message="the background worker to drain the backlog")
    # The worker's whole life so far: its start-up (loading the engine) and the drain.
    pid = sampler.own_pid or worker_pid()
    cpu = cpu_seconds(pid)
    # Its CPU from its first batch written on, per key written after (start-up left out).
    steady = None
    if sampler.first_work and sampler.first_work[1] < size:
        steady = round((cpu - sampler.first_work[0]) / (size - sampler.first_work[1]) * 1e6, 1)
    return {"start": start, "end": None, "cpu_seconds": cpu, "steady_cpu_us_per_key": steady}, sampler


def _tenths(conn, destination, size):
    """Rows/s of each tenth of the drain, by the rows' write times (the
    ChunkText of a short text and the model's make one row per key)."""
    bounds = conn.execute(f"""
        SELECT percentile_disc(ARRAY[0, .1, .2, .3, .4, .5, .6, .7, .8, .9, 1])
               WITHIN GROUP (ORDER BY extract(epoch FROM bench_written_at))
        FROM {destination}""").fetchone()[0]
    bounds = [float(b) for b in bounds]
    return [round(size / 10 / (b - a), 1) if b > a else None for a, b in zip(bounds, bounds[1:])]


class LockSampler:
    """A thread that reads pg_locks every SAMPLE_SECONDS over its own
    connection while the block runs: the table's entries, and those of the
    backend `pid()` names (None while there is none). With `rows_written`,
    it also notes (CPU seconds of that backend, rows_written()) at the first
    sample where rows_written() is not 0: `first_work`."""

    def __init__(self, conn, pid, rows_written=None):
        self.conn, self.pid, self.rows_written = conn, pid, rows_written
        self.first_work = None
        self.samples, self.peak_all, self.peak_own, self.peak_own_shared = 0, 0, 0, 0
        self.own_pid, self.error = None, None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        try:
            while not self._stop.is_set():
                pid = self.own_pid or self.pid()
                self.own_pid = pid
                every, own, own_shared = self.conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE pid = %s), "
                    "count(*) FILTER (WHERE pid = %s AND NOT fastpath) FROM pg_locks",
                    (pid, pid)).fetchone()
                self.samples += 1
                if pid and self.rows_written and self.first_work is None:
                    cpu = cpu_seconds(pid)
                    rows = self.rows_written()
                    if rows:
                        self.first_work = (cpu, rows)
                self.peak_all = max(self.peak_all, every)
                self.peak_own = max(self.peak_own, own)
                self.peak_own_shared = max(self.peak_own_shared, own_shared)
                self._stop.wait(SAMPLE_SECONDS)
        except Exception as exc:  # noqa: BLE001 — reported with the result, the drain goes on
            self.error = repr(exc)

    def result(self):
        return {"peak_all": self.peak_all, "peak_own": self.peak_own,
                "peak_own_shared": self.peak_own_shared, "samples": self.samples,
                "error": self.error}


def _ratios(runs):
    """Per series: time per key at each size over the smallest size's, for
    the whole drain, for its steady part (first row written to last) and
    for the draining process's CPU time."""
    out = {}
    for label, by_size in runs.items():
        sizes = sorted(by_size, key=int)
        out[label] = {kind: {f"{size}/{sizes[0]}": ratio(by_size[size][kind], by_size[sizes[0]][kind])
                             for size in sizes[1:]}
                      for kind in ("us_per_key", "steady_us_per_key", "cpu_us_per_key")}
    return out


def _name(label):
    kind, mode = label.split("/")
    return f"{MODES[mode]}, {PIPELINES[kind]}"


def _summary(runs, sizes):
    rows = []
    shown = "/".join(_short(s) for s in sizes)
    larger = "/".join(_short(s) for s in sizes[1:])

    def each(by_size, value):
        return " / ".join(value(by_size[str(s)]) for s in sizes)

    for label, by_size in runs.items():
        first = by_size[str(sizes[0])]
        ratios = " / ".join(
            f"{ratio(by_size[str(s)]['us_per_key'], first['us_per_key']):.2f} "
            f"({ratio(by_size[str(s)]['steady_us_per_key'], first['steady_us_per_key']) or 0:.2f})"
            for s in sizes[1:])
        rows += [summary_row("backlog_size", f"{_name(label)}: µs per key, whole (steady) at {shown}",
                             each(by_size, lambda r: f"{r['us_per_key']:.0f} "
                                                     f"({r['steady_us_per_key'] or 0:.0f})")),
                 summary_row("backlog_size", f"{_name(label)}: CPU µs per key, draining backend "
                             f"(+ test server) at {shown}", each(by_size, _cpu), "flat"),
                 summary_row("backlog_size", f"{_name(label)}: rows/s at {shown}",
                             each(by_size, lambda r: f"{r['rows_per_s']:.0f}")),
                 summary_row("backlog_size", f"{_name(label)}: time per key / at {_short(sizes[0])}, "
                             f"whole (steady), at {larger}", ratios, "flat (1.0)"),
                 summary_row("backlog_size", f"{_name(label)}: pg_locks peak, all (the drainer's) "
                             f"at {shown}", each(by_size, lambda r: f"{r['locks']['peak_all']} "
                                                               f"({r['locks']['peak_own']})"), "flat")]
    return rows


def _cpu(r):
    server = r.get("server_cpu_us_per_key")
    return f"{r['cpu_us_per_key']:.0f}" + (f" (+{server:.0f})" if server else "")


def _short(size):
    size = int(size)
    return f"{size // 1_000_000}M" if size % 1_000_000 == 0 else (
        f"{size // 1000}k" if size % 1000 == 0 else str(size))


def plot(result, path):
    fig, (per_key, locks) = new_figure(12, 5.5, ncols=2)
    for label, by_size in result["runs"].items():
        sizes = sorted(by_size, key=int)
        x = [int(s) for s in sizes]
        line, = per_key.plot(x, [by_size[s]["us_per_key"] for s in sizes], marker="o",
                             label=_name(label))
        per_key.plot(x, [by_size[s]["cpu_us_per_key"] for s in sizes], marker="x", linestyle="--",
                     color=line.get_color())
        locks.plot(x, [by_size[s]["locks"]["peak_all"] for s in sizes], marker="o",
                   color=line.get_color(), label=_name(label) + ": whole table")
        locks.plot(x, [by_size[s]["locks"]["peak_own_shared"] for s in sizes], marker="x",
                   linestyle="--", color=line.get_color())
    p = result["parameters"]
    for ax in (per_key, locks):
        ax.set_xscale("log")
        ax.set_xlabel("keys in the backlog")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    per_key.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=2)
    per_key.set_ylabel("µs per key: wall (solid), drainer's CPU (dashed)")
    locks.set_ylabel("pg_locks entries, peak: whole table (solid),\n"
                     "drainer's outside the fast path (dashed)")
    per_key.set_title(f"Time per key, batch {p['batch_size']}, {p['dims']} dims (flat is the goal)")
    capacity = lock_table_capacity(p["postgres"])
    locks.set_title("Lock table peak during the drain" + (
        f" (it holds {capacity:,})" if capacity else ""))
    save_figure(fig, path)


def _sizes(text):
    units = {"k": 1000, "m": 1_000_000}
    return tuple(int(float(s[:-1]) * units[s[-1].lower()]) if s[-1].lower() in units else int(s)
                 for s in text.split(","))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="10k and 100k keys only")
    parser.add_argument("--sizes", type=_sizes,
                        help="backlog sizes, comma-separated, k/M allowed (default 10k,100k,1M)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help=f"drain modes, comma-separated (default {','.join(MODES)})")
    parser.add_argument("--pipelines", default=",".join(PIPELINES),
                        help=f"pipeline kinds, comma-separated (default {','.join(PIPELINES)})")
    parser.add_argument("--batch", type=int, default=100, help="batch size (default 100)")
    parser.add_argument("--dims", type=int, default=8, help="vector size (default 8)")
    parser.add_argument("--repeat", type=int, default=3,
                        help=f"drains of each size up to {REPEAT_UP_TO} keys; the fastest counts "
                             "(default 3)")
    args = parser.parse_args()
    # SIGTERM ends the run through the context managers: cluster, server, worker stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    standalone(sys.modules[__name__], {"sizes": args.sizes, "modes": tuple(args.modes.split(",")),
                                       "pipelines": tuple(args.pipelines.split(",")),
                                       "batch": args.batch, "dims": args.dims,
                                       "repeat": args.repeat}, args.quick)


if __name__ == "__main__":
    sys.exit(main())
