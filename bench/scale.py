#!/opt/aidb-dev-venv/bin/python
"""Scale: 1, 4 and 16 Background pipelines in one database, each with its
own background worker: how fast they drain the same total backlog together,
how much memory each worker holds, and what they cost once idle.

    /opt/aidb-dev-venv/bin/python bench/scale.py [--quick] [--counts 1,4,16]
        [--rows 16000] [--latency-ms 50] [--dims 1536] [--batch 50] [--idle-window 10]

For each count K, a fresh database of one throwaway cluster gets K source
tables holding --rows / K of drain.py's ~60-word texts each, and a Disabled
pipeline on each (the backlogs fill); all K are then switched to Background
in one transaction. Throughput: total rows over the time from that commit to
the last destination row written (worker start-up included). The test
server adds --latency-ms to each request (a remote provider's round trip, the
case where more workers pay off) and answers from a warm cache.

Once every worker sleeps on its latch: each worker's resident memory (VmRSS;
RssAnon, its private part: the rest is mostly shared buffers and libraries)
and the CPU all K use over --idle-window seconds (utime + stime from /proc,
as a percentage of one core).
"""

import argparse
import contextlib
import sys
import time

from common import (fresh_database, make_texts, model_server, new_figure, pg_cluster,
                    save_figure, standalone, summary_row, utc_date, wait_for, warm_cache)
from freshness import sleeping_workers
from systems import (API_KEY, SERVER_MODEL, aidb_backlog_empty, aidb_pipeline, aidb_set_mode,
                     aidb_setup, create_docs, written_span)
from tests.support.workers import cpu_seconds, resident_kib

DRAIN_TIMEOUT = 1800


def run(quick=False, counts=(1, 4, 16), rows=None, latency_ms=50, dims=1536, batch=50,
        idle_window=10):
    rows = rows or (1600 if quick else 16000)
    texts = make_texts(rows)
    results = {}
    with contextlib.ExitStack() as stack:
        server = stack.enter_context(model_server(API_KEY))
        warm_cache(server.url, API_KEY, SERVER_MODEL, dims, texts, encodings=("base64",))
        server.set_latency(latency_ms)
        cluster = stack.enter_context(pg_cluster())
        for count in counts:
            with fresh_database(cluster, f"scale_{count}") as dsn:
                results[str(count)] = measure(dsn, server.url, texts, count, dims, batch,
                                              idle_window)
            print(f"scale: {count} pipelines: {results[str(count)]['rows_per_s']} rows/s, "
                  f"{results[str(count)]['rss_mib_mean']} MiB per worker, "
                  f"idle {results[str(count)]['idle_cpu_percent']} % CPU", flush=True)
    return {"name": "scale", "date": utc_date(),
            "parameters": {"counts": list(counts), "rows_total": rows, "latency_ms": latency_ms,
                           "dims": dims, "batch_size": batch, "idle_window_s": idle_window},
            "results": results, "summary": _summary(results, latency_ms)}


def measure(dsn, server_url, texts, count, dims, batch, idle_window):
    import psycopg
    names = [f"p{n}" for n in range(count)]
    share = len(texts) // count
    with psycopg.connect(dsn, autocommit=True) as conn:
        aidb_setup(conn, server_url, dims)
        destinations = []
        for n, name in enumerate(names):
            create_docs(conn, texts[n * share:(n + 1) * share], table=f"docs_{n}")
            destinations.append(aidb_pipeline(conn, name, source=f"docs_{n}", batch_size=batch))
        conn.execute("CHECKPOINT")
        started = aidb_set_mode(conn, names, "Background")
        wait_for(lambda: aidb_backlog_empty(conn, names), timeout=DRAIN_TIMEOUT, interval=0.2,
                 message=f"{count} workers to drain their backlogs")
        spans = [written_span(conn, d) for d in destinations]
        if any(rows != share for rows, _, _ in spans):
            raise AssertionError(f"destinations hold {[s[0] for s in spans]} rows, {share} each expected")
        finished = max(last for _, _, last in spans)
        pids = wait_for(lambda: sleeping_workers(conn, names), timeout=60,
                        message="the workers to fall asleep")
        rss_mib = [round(resident_kib(pid) / 1024, 1) for pid in pids]
        anon_mib = [round(resident_kib(pid, "RssAnon") / 1024, 1) for pid in pids]
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(idle_window)        # the measurement window itself
        idle_cpu = sum(cpu_seconds(pid) for pid in pids) - before
        if set(sleeping_workers(conn, names) or ()) != set(pids):
            raise RuntimeError("a worker was replaced (or busy) during the idle measurement")
    return {"pipelines": count, "rows": share * count, "seconds": round(finished - started, 3),
            "rows_per_s": round(share * count / (finished - started), 1),
            "rss_mib_per_worker": rss_mib, "rss_mib_mean": round(sum(rss_mib) / len(rss_mib), 1),
            "rss_mib_max": max(rss_mib), "rss_anon_mib_mean": round(sum(anon_mib) / len(anon_mib), 1),
            "idle_cpu_seconds": round(idle_cpu, 3),
            "idle_cpu_percent": round(100 * idle_cpu / idle_window, 3)}


def _summary(results, latency_ms):
    rows = []
    for count, r in results.items():
        label = f"{count} Background pipeline{'s' if count != '1' else ''}"
        rows.append(summary_row("scale", f"{label}: drain rows/s, all together ({latency_ms:g} ms "
                                "server latency)", f"{r['rows_per_s']:.0f}"))
        rows.append(summary_row("scale", f"{label}: VmRSS per worker, mean / max (private "
                                "part, RssAnon) (MiB)",
                                f"{r['rss_mib_mean']} / {r['rss_mib_max']} ({r['rss_anon_mib_mean']})"))
        rows.append(summary_row("scale", f"{label}: idle CPU of all workers (% of a core)",
                                r["idle_cpu_percent"]))
    return rows


def plot(result, path):
    fig, axes = new_figure(11, 3.6, ncols=3)
    counts = list(result["results"])
    series = (("rows_per_s", "drain rows / s (all workers)", "%.0f"),
              ("rss_mib_mean", "VmRSS per worker (MiB)", "%.0f"),
              ("idle_cpu_percent", "idle CPU, all workers (% of a core)", "%.2f"))
    for ax, (key, label, fmt) in zip(axes, series):
        bars = ax.bar(counts, [result["results"][c][key] for c in counts], color="tab:blue")
        ax.bar_label(bars, fmt=fmt, fontsize=8)
        ax.set_xlabel("Background pipelines")
        ax.set_title(label, fontsize=10)
    p = result["parameters"]
    fig.suptitle(f"Scale: {p['rows_total']} rows split over the pipelines, "
                 f"{p['latency_ms']:g} ms server latency, batch {p['batch_size']}", fontsize=10)
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1,600 rows instead of 16,000")
    parser.add_argument("--counts", default="1,4,16", help="pipeline counts (1,4,16)")
    parser.add_argument("--rows", type=int, help="total backlog (overrides --quick)")
    parser.add_argument("--latency-ms", type=float, default=50, help="server latency (50)")
    parser.add_argument("--dims", type=int, default=1536, help="vector size (1536)")
    parser.add_argument("--batch", type=int, default=50, help="rows per batch (50)")
    parser.add_argument("--idle-window", type=float, default=10, help="idle seconds measured (10)")
    args = parser.parse_args()
    standalone(sys.modules[__name__], {
        "counts": tuple(int(c) for c in args.counts.split(",")), "rows": args.rows,
        "latency_ms": args.latency_ms, "dims": args.dims, "batch": args.batch,
        "idle_window": args.idle_window}, args.quick)


if __name__ == "__main__":
    sys.exit(main())
