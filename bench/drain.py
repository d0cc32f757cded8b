#!/opt/aidb-dev-venv/bin/python
"""Drain throughput: one worker empties a backlog of ~60-word texts, for
aidb's background worker, aidb's external worker and pgai's vectorizer worker.

    /opt/aidb-dev-venv/bin/python bench/drain.py [--quick] [--rows N]
        [--latencies 0,50] [--dims 1536] [--batch 50] [--repeat 3]

All three run against the same table (the same deterministic texts), the same
OpenAI-compatible test server (tests/support/model_server.py, its own
process) and the same batch size, one after the other, each in a fresh
database of one throwaway cluster:

- aidb background worker: a pipeline created Disabled (the backlog fills),
  then switched to Background; the launcher starts its worker at commit.
- aidb external worker: `aidb worker -i p --once -c 1` on the same kind of
  pipeline, left Disabled so that no background worker joins in.
- pgai: `pgai vectorizer worker --once -c 1` (PyPI pgai 0.12.1, setup_pgai.sh)
  on a vectorizer with loading_column, chunking_none, indexing_none.

Neither side builds a vector index. The server answers from a cache warmed
with the table's texts before any timing, so its own CPU (hashing, float
formatting) stays out of the figures (`server_cache_misses` in the JSON
counts vectors it still had to render during the runs: 0 when the cache
covered all); each latency setting adds that much to every request.

Two rates per run, both from the destination rows' write times: `steady`
from the first batch written to the last, and `wall` from the moment the
system was told to go (pipeline switched on, process spawned) to the last
row, process start-up included. Goal: aidb >= 2x pgai.

Each latency runs --repeat rounds (3; 1 with --quick), every system once a
round, in the reverse order of the round before: the rates shown are the
medians over rounds, the ratios the medians of each round's paired ratio.
One drain lasts seconds, and this machine's speed drifts by 10-20 % from one
minute to the next: single runs put the external worker at 1.9x pgai in one
run and 2.3x in the next.
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile

from common import (fresh_database, grouped_bars, make_texts, model_server, new_figure,
                    pg_cluster, ratio, run_checked, save_figure, standalone, summary_row,
                    utc_date, verdict, wait_for, warm_cache)
from systems import (API_KEY, PGAI_DESTINATION, SERVER_MODEL, aidb_backlog_empty, aidb_pipeline,
                     aidb_set_mode, aidb_setup, aidb_worker_command, check_vector, create_docs,
                     db_clock, drain_rates, ensure_pgai, pgai_env, pgai_errors, pgai_install,
                     pgai_vectorizer, pgai_worker_command, written_span)

GOAL = 2.0
SYSTEMS = {"aidb_background": "aidb background worker",
           "aidb_external": "aidb external worker (-c 1)",
           "pgai": "pgai vectorizer worker (-c 1)"}
DRAIN_TIMEOUT = 3600


def run(quick=False, rows=None, latencies=(0, 50), dims=1536, batch=50, repeat=None):
    rows = rows or (2000 if quick else 20000)
    repeat = repeat or (1 if quick else 3)
    texts = make_texts(rows)
    ensure_pgai()
    rounds = {}
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="aidb-bench-drain-"))
        server = stack.enter_context(model_server(API_KEY))
        print(f"drain: warming the server's cache with {rows} texts ...", flush=True)
        warm_cache(server.url, API_KEY, SERVER_MODEL, dims, texts)
        warmed = server.state()["cached_vectors"]
        cluster = stack.enter_context(pg_cluster())
        bench = Drain(cluster, server, texts, dims, batch, scratch)
        for latency in latencies:
            server.set_latency(latency)
            rounds[str(latency)] = []
            for n in range(repeat):
                order = list(SYSTEMS) if n % 2 == 0 else list(reversed(SYSTEMS))
                rounds[str(latency)].append(
                    {system: bench.drain(system, f"drain_{system}_{latency}_{n}", latency)
                     for system in order})
        # Vectors the server had to render while timed runs went on (0: all cached).
        cache_misses = server.state()["cached_vectors"] - warmed
    runs = {latency: _median_runs(r) for latency, r in rounds.items()}
    ratios = {latency: _ratios(r) for latency, r in rounds.items()}
    return {"name": "drain", "date": utc_date(),
            "parameters": {"rows": rows, "words_per_text": 60, "dims": dims, "batch_size": batch,
                           "latencies_ms": list(latencies), "server_model": SERVER_MODEL,
                           "repeat": repeat},
            "runs": runs, "rounds": rounds, "ratios": ratios, "goal": GOAL,
            "server_cache_misses": cache_misses, "summary": _summary(runs, ratios)}


class Drain:
    """One drain of the same table per system, each in a fresh database."""

    def __init__(self, cluster, server, texts, dims, batch, scratch):
        self.cluster, self.server, self.texts = cluster, server, texts
        self.dims, self.batch, self.scratch = dims, batch, scratch

    def drain(self, system, dbname, latency):
        """One drain by `system` (a method name below), reported as it ends."""
        result = getattr(self, system)(dbname)
        print(f"drain: {latency} ms, {SYSTEMS[system]}: {result['steady_rows_per_s']} rows/s "
              f"steady, {result['wall_rows_per_s']} wall", flush=True)
        return result

    def aidb_background(self, dbname):
        with self._database(dbname) as conn:
            destination = self._aidb_source(conn)
            started = aidb_set_mode(conn, ["p"], "Background")
            wait_for(lambda: aidb_backlog_empty(conn, ["p"]), timeout=DRAIN_TIMEOUT, interval=0.2,
                     message="the background worker to drain the backlog")
            return self._result(conn, destination, "source_key", started)

    def aidb_external(self, dbname):
        with self._database(dbname) as conn:
            destination = self._aidb_source(conn)
            started = db_clock(conn)
            self.run_worker(aidb_worker_command(self.cluster.dsn(dbname), "p"), dbname)
            return self._result(conn, destination, "source_key", started)

    def pgai(self, dbname):
        with self._database(dbname) as conn:
            pgai_install(self.cluster.dsn(dbname), self._log(dbname))
            create_docs(conn, self.texts)
            pgai_vectorizer(conn, self.server.url, self.dims, batch_size=self.batch)
            conn.execute("CHECKPOINT")
            started = db_clock(conn)
            self.run_worker(pgai_worker_command(self.cluster.dsn(dbname)), dbname, env=pgai_env())
            if pgai_errors(conn):
                raise RuntimeError("pgai recorded errors in ai.vectorizer_errors")
            return self._result(conn, PGAI_DESTINATION, "id", started)

    def run_worker(self, command, dbname, env=None):
        """Run a worker process to its end (profile_drain.py measures and
        profiles it here)."""
        run_checked(command, env=env, timeout=DRAIN_TIMEOUT, log_path=self._log(dbname))

    @contextlib.contextmanager
    def _database(self, dbname):
        import psycopg
        with fresh_database(self.cluster, dbname) as dsn, \
                psycopg.connect(dsn, autocommit=True) as conn:
            yield conn

    def _aidb_source(self, conn):
        """The table and a Disabled pipeline on it: the backlog holds every row."""
        aidb_setup(conn, self.server.url, self.dims)
        create_docs(conn, self.texts)
        destination = aidb_pipeline(conn, "p", batch_size=self.batch)
        conn.execute("CHECKPOINT")
        return destination

    def _result(self, conn, destination, key_column, started):
        rows, first, last = written_span(conn, destination)
        if rows != len(self.texts):
            raise AssertionError(f"{destination} holds {rows} rows, expected {len(self.texts)}")
        check_vector(conn, destination, key_column, 1, self.texts[0], self.dims)
        return drain_rates(rows, started, first, last, self.batch)

    def _log(self, dbname):
        return os.path.join(self.scratch, f"{dbname}.log")


def _median_runs(rounds):
    """Per system, the median of the rounds' rates (the run itself when one)."""
    return {system: {key: statistics.median(r[system][key] for r in rounds)
                     for key in rounds[0][system]}
            for system in SYSTEMS}


def _ratios(rounds):
    """aidb / pgai per system and rate kind: the median of each round's ratio."""
    return {f"{system}/pgai": {kind: statistics.median(
                ratio(r[system][f"{kind}_rows_per_s"], r["pgai"][f"{kind}_rows_per_s"])
                for r in rounds) for kind in ("steady", "wall")}
            for system in ("aidb_background", "aidb_external")}


def _summary(runs, ratios):
    rows = []
    for latency, r in runs.items():
        for system, label in SYSTEMS.items():
            rows.append(summary_row("drain", f"{label}, {latency} ms: rows/s (steady / wall)",
                                    f"{r[system]['steady_rows_per_s']:.0f} / "
                                    f"{r[system]['wall_rows_per_s']:.0f}"))
        for system in ("aidb_background", "aidb_external"):
            paired = ratios[latency][f"{system}/pgai"]
            rows.append(summary_row("drain", f"{SYSTEMS[system].split(' (')[0]} / pgai, {latency} ms "
                                    "(steady / wall)", f"{paired['steady']:.2f} / {paired['wall']:.2f}",
                                    f">= {GOAL}", verdict(paired["steady"], GOAL)))
    return rows


def plot(result, path):
    fig, ax = new_figure(7, 4)
    latencies = list(result["runs"])
    grouped_bars(ax, [f"server latency {l} ms" for l in latencies],
                 {label: [result["runs"][l][system]["steady_rows_per_s"] for l in latencies]
                  for system, label in SYSTEMS.items()}, "rows / s, steady (higher is better)")
    p = result["parameters"]
    ax.set_title(f"Drain throughput: {p['rows']} texts of ~{p['words_per_text']} words, "
                 f"{p['dims']} dims, batch {p['batch_size']}")
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2,000 rows instead of 20,000")
    parser.add_argument("--rows", type=int, help="rows in the table (overrides --quick)")
    parser.add_argument("--latencies", default="0,50",
                        help="test-server latencies in ms, comma-separated (default 0,50)")
    parser.add_argument("--dims", type=int, default=1536, help="vector size (default 1536)")
    parser.add_argument("--batch", type=int, default=50, help="rows per batch (default 50)")
    parser.add_argument("--repeat", type=int, help="rounds per latency (3; quick 1)")
    args = parser.parse_args()
    latencies = tuple(int(x) for x in args.latencies.split(","))
    standalone(sys.modules[__name__], {"rows": args.rows, "latencies": latencies,
                                       "dims": args.dims, "batch": args.batch,
                                       "repeat": args.repeat}, args.quick)


if __name__ == "__main__":
    sys.exit(main())
