#!/opt/aidb-dev-venv/bin/python
"""Freshness: how soon after a source row commits its embedding is committed
by a Background pipeline's worker, under a steady trickle of inserts; and
what idle Background workers cost.

    /opt/aidb-dev-venv/bin/python bench/freshness.py [--seconds 30] [--rate 10] [--quick]

A throwaway cluster (scripts/pgcluster.py, with track_commit_timestamp = on)
and the OpenAI-compatible test server (tests/support/model_server.py, in its
own process). One Background pipeline with the default
background_sync_interval (30 seconds) over events(id, body, created_at); one
connection inserts --rate rows per second for --seconds, each row its own
autocommit transaction, paced by the clock. The worker is woken by each
commit: the sync interval only bounds how long a missed wake-up could go
unnoticed.

Latency of a row: the commit time of the worker transaction that wrote its
embedding minus the commit time of the row's INSERT, both from
pg_xact_commit_timestamp(xmin). One clock (the server's), and exactly the
moments each change became visible to other sessions; no polling error. The
destination's updated_at is no good for this: it is now() of the worker's
transaction, i.e. when the batch *started*, which can even precede the
source row's commit (a later statement of the same transaction claims it).
`created_at` (clock_timestamp() at the INSERT) gives a cross-check.

Then --idle-pipelines (8) idle Background pipelines: the CPU their workers
use over --idle-window (10) seconds, utime + stime from /proc/PID/stat, as a
percentage of one core (resolution: one clock tick, 10 ms), and each
worker's resident memory (VmRSS from /proc/PID/status; RssAnon, its private
part, too).

Writes bench/results/freshness-<UTC date>.json and .png.
Goals: p50 < 250 ms, p99 < 1 s, idle CPU nothing measurable (< 0.1 %).
"""

import argparse
import sys
import time

from common import (connect, model_server, new_figure, pg_cluster, save_figure, standalone,
                    summary_row, utc_date, verdict, wait_for)
from tests.support.pipeline_checks import create_fake_model, create_pipeline
from tests.support.workers import cpu_seconds, drained, resident_kib, running_worker

API_KEY = "sk-bench-freshness"     # common.model_server always sets one; nothing secret
GOALS_MS = {"p50": 250, "p99": 1000}
IDLE_CPU_GOAL_PERCENT = 0.1
PIPELINE = "fresh"
DRAIN_TIMEOUT = 120

LATENCIES_SQL = f"""
    SELECT e.id,
           1000 * extract(epoch FROM pg_xact_commit_timestamp(d.xmin)
                                     - pg_xact_commit_timestamp(e.xmin)) AS commit_to_commit,
           1000 * extract(epoch FROM pg_xact_commit_timestamp(d.xmin) - e.created_at) AS from_insert
    FROM events e JOIN {PIPELINE}_embeddings d ON d.source_key = e.id
    WHERE e.id > 0
    ORDER BY e.id"""


def run(quick=False, seconds=30, rate=10, idle_pipelines=8, idle_window=10):
    seconds = min(seconds, 10) if quick else seconds
    with pg_cluster({"track_commit_timestamp": "on"}) as cluster, \
            model_server(API_KEY, cache=False) as server, connect(cluster, "postgres") as conn:
        conn.execute("CREATE EXTENSION aidb CASCADE")
        create_fake_model(conn, server.url, API_KEY)
        rows = latencies(conn, seconds, rate)
        idle = idle_cost(conn, idle_pipelines, idle_window)
    latency = {"commit_to_commit": percentiles([r[1] for r in rows]),
               "from_created_at": percentiles([r[2] for r in rows])}
    return {"name": "freshness", "date": utc_date(),
            "parameters": {"seconds": seconds, "rate_rows_per_s": rate,
                           "background_sync_interval": "30 seconds",
                           "idle_pipelines": idle_pipelines, "idle_window_s": idle_window},
            "latency_ms": latency, "goals_ms": GOALS_MS,
            "latencies_ms": [round(r[1], 2) for r in rows], "idle": idle,
            "summary": _summary(latency["commit_to_commit"], idle)}


# --- commit-to-embedding latency ----------------------------------------------------------------

def latencies(conn, seconds, rate):
    """[(id, ms commit to commit, ms from created_at)] of rows inserted at
    `rate` per second for `seconds`, once all are embedded."""
    conn.execute("CREATE TABLE events (id bigint PRIMARY KEY, body text NOT NULL, "
                 "created_at timestamptz NOT NULL DEFAULT clock_timestamp())")
    create_pipeline(conn, PIPELINE, source="events", auto_processing="Background")
    wait_for(lambda: running_worker(conn, PIPELINE), message="the pipeline's worker")
    # Warm-up (row 0, not counted): the worker's first embedding loads the
    # provider's client; freshness is about a running system.
    conn.execute("INSERT INTO events (id, body) VALUES (0, 'warm-up')")
    wait_for(lambda: embedded(conn) == 1, message="the warm-up row's embedding")
    total = int(seconds * rate)
    print(f"freshness: inserting {total} rows at {rate}/s ...", flush=True)
    start = time.monotonic()
    for i in range(1, total + 1):
        pause = start + (i - 1) / rate - time.monotonic()
        if pause > 0:
            time.sleep(pause)    # pacing the writer, not waiting for the system
        conn.execute("INSERT INTO events (id, body) VALUES (%s, %s)",
                     (i, f"event {i}: something happened at step {i}"))
    wait_for(lambda: drained(conn, PIPELINE), timeout=DRAIN_TIMEOUT, message="the last rows")
    rows = [(i, float(a), float(b)) for i, a, b in conn.execute(LATENCIES_SQL)]
    if len(rows) != total:
        raise RuntimeError(f"{total} rows inserted but {len(rows)} embedded")
    return rows


def embedded(conn):
    return conn.execute(f"SELECT count(*) FROM {PIPELINE}_embeddings").fetchone()[0]


def percentiles(values):
    import numpy
    p50, p95, p99 = numpy.percentile(values, [50, 95, 99])
    return {"count": len(values), "p50": round(p50, 1), "p95": round(p95, 1),
            "p99": round(p99, 1), "max": round(max(values), 1),
            "mean": round(sum(values) / len(values), 1)}


# --- idle workers -------------------------------------------------------------------------------

def idle_cost(conn, count, window):
    """CPU (% of one core) of `count` idle Background pipelines' workers over
    `window` seconds, and their resident memory."""
    names = [f"idle_{n}" for n in range(1, count + 1)]
    for name in names:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, body text NOT NULL)")
        conn.execute(f"INSERT INTO {name} SELECT g, 'idle row ' || g FROM generate_series(1, 3) g")
        create_pipeline(conn, name, source=name, auto_processing="Background")
    for name in names:
        wait_for(lambda: drained(conn, name) and running_worker(conn, name), timeout=DRAIN_TIMEOUT,
                 message=f"{name} to drain")
    pids = wait_for(lambda: sleeping_workers(conn, names), message="the workers to fall asleep")
    print(f"freshness: {count} idle workers, measuring {window} s ...", flush=True)
    before = sum(cpu_seconds(pid) for pid in pids)
    time.sleep(window)           # the measurement window itself
    used = sum(cpu_seconds(pid) for pid in pids) - before
    if set(sleeping_workers(conn, names) or ()) != set(pids):
        raise RuntimeError("an idle worker was replaced (or busy) at the end of the measurement")
    rss_mib = [round(resident_kib(pid) / 1024, 1) for pid in pids]
    anon_mib = [round(resident_kib(pid, "RssAnon") / 1024, 1) for pid in pids]
    return {"pipelines": count, "window_s": window, "cpu_seconds": round(used, 3),
            "cpu_percent_of_one_core": round(100 * used / window, 3),
            "rss_mib_per_worker": rss_mib,
            "rss_mib_mean": round(sum(rss_mib) / len(rss_mib), 1), "rss_mib_max": max(rss_mib),
            # the part no other process shares (VmRSS also counts shared libraries
            # and the shared buffers the worker touched)
            "rss_anon_mib_mean": round(sum(anon_mib) / len(anon_mib), 1)}


def sleeping_workers(conn, names):
    """Pids of the pipelines' workers if every one sleeps on its latch, else None."""
    rows = conn.execute("""
        SELECT pid, state = 'idle' AND wait_event = 'Extension' FROM pg_stat_activity
        WHERE backend_type = 'aidb pipeline worker' AND application_name = ANY(%s)""",
                        ([f"aidb pipeline {name}" for name in names],)).fetchall()
    if len(rows) == len(names) and all(asleep for _, asleep in rows):
        return [pid for pid, _ in rows]
    return None


# --- report -------------------------------------------------------------------------------------

def _summary(latency, idle):
    rows = [summary_row("freshness", f"commit to embedding, {q} (ms)", latency[q],
                        f"< {GOALS_MS[q]}" if q in GOALS_MS else "",
                        verdict(latency[q], GOALS_MS.get(q), higher_is_better=False))
            for q in ("p50", "p95", "p99")]
    rows.append(summary_row("freshness", f"idle CPU, {idle['pipelines']} workers (% of a core)",
                            idle["cpu_percent_of_one_core"], f"< {IDLE_CPU_GOAL_PERCENT}",
                            verdict(idle["cpu_percent_of_one_core"], IDLE_CPU_GOAL_PERCENT,
                                    higher_is_better=False)))
    memory = f"{idle['rss_mib_mean']} / {idle['rss_mib_max']} ({idle['rss_anon_mib_mean']})"
    rows.append(summary_row("freshness", "resident memory per idle worker, VmRSS mean / max "
                            "(private part) (MiB)", memory))
    return rows


def plot(result, path):
    fig, ax = new_figure(7, 4)
    stats = result["latency_ms"]["commit_to_commit"]
    ax.hist(result["latencies_ms"], bins=40, color="tab:blue")
    for q, style in (("p50", "-"), ("p95", "--"), ("p99", ":")):
        ax.axvline(stats[q], color="black", linestyle=style, label=f"{q} {stats[q]:.0f} ms")
    ax.set_xlabel("commit of the row to commit of its embedding (ms)")
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    p, idle = result["parameters"], result["idle"]
    goals = f"goals p50 < {GOALS_MS['p50']} ms, p99 < {GOALS_MS['p99']} ms"
    ax.set_title(f"Background pipeline freshness: {p['rate_rows_per_s']:g} rows/s for "
                 f"{p['seconds']:g} s\n({goals}); {idle['pipelines']} idle workers: "
                 f"{idle['cpu_percent_of_one_core']:g} % CPU, {idle['rss_mib_mean']:g} MiB each",
                 fontsize=9)
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30, help="insert for this long (30)")
    parser.add_argument("--rate", type=float, default=10, help="rows per second (10)")
    parser.add_argument("--idle-pipelines", type=int, default=8, help="idle workers measured (8)")
    parser.add_argument("--idle-window", type=float, default=10, help="seconds measured (10)")
    parser.add_argument("--quick", action="store_true", help="insert for at most 10 s")
    args = parser.parse_args()
    standalone(sys.modules[__name__], {"seconds": args.seconds, "rate": args.rate,
                                       "idle_pipelines": args.idle_pipelines,
                                       "idle_window": args.idle_window}, args.quick)


if __name__ == "__main__":
    sys.exit(main())
