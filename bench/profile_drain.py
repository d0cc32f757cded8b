#!/opt/aidb-dev-venv/bin/python
"""Where a drain's time goes at 0 ms model latency: the CPU each process
spends per row, and where the worker's Python spends it, for aidb's external
worker and pgai's worker.

    /opt/aidb-dev-venv/bin/python bench/profile_drain.py [--quick] [--rows N]
        [--dims 1536] [--batch 50]

The setup is drain.py's (the same texts, test server with a warm cache,
fresh database per run). Each system drains twice:

- timed, alone: its steady rate, and the CPU seconds per row of the worker
  process, of PostgreSQL (the postmaster and every child, those that exited
  included) and of the model server, read from /proc from the worker's start
  to its end (the setup before it stays out); `busy` is their sum over the
  machine's cores and the worker's run time, start-up included.
- under py-spy (`record --gil`: samples of the thread that holds the GIL,
  that is, of the worker's Python work, 200 per second): each sample goes to
  the library of its innermost frame; imports are start-up and reported
  apart.

This is the profile behind docs/benchmarks.md's reading of the drain at
0 ms: one external worker is bound by its own Python (one GIL) while
PostgreSQL and the server leave cores idle.
"""

import argparse
import collections
import os
import re
import sys
import tempfile
import time

from common import (grouped_bars, make_texts, model_server, new_figure, pg_cluster, save_figure,
                    standalone, summary_row, utc_date, warm_cache)
from drain import Drain
from systems import API_KEY, SERVER_MODEL

PY_SPY = os.path.join(os.path.dirname(sys.executable), "py-spy")
SAMPLES_PER_S = 200
SYSTEMS = {"aidb_external": "aidb external worker (-c 1)", "pgai": "pgai vectorizer worker (-c 1)"}
# Library of a frame, by the path in its file name; the first match wins.
LIBRARIES = (("aidb", r"\baidb/"), ("openai SDK", r"\bopenai/"),
             ("HTTP client", r"\b(httpx2?|httpcore|h11|anyio)/"), ("pydantic", r"\bpydantic"),
             ("psycopg", r"\bpsycopg"), ("pgai", r"\bpgai/"), ("json", r"\bjson/"),
             ("threads", r"\b(threading|queue|concurrent/futures|selectors)\.py|concurrent/"),
             ("asyncio", r"\basyncio/"))
STARTUP = re.compile(r"<frozen importlib")


def run(quick=False, rows=None, dims=1536, batch=50):
    rows = rows or (4000 if quick else 20000)
    texts = make_texts(rows)
    result = {"name": "profile_drain", "date": utc_date(),
              "parameters": {"rows": rows, "dims": dims, "batch_size": batch, "latency_ms": 0,
                             "py_spy_samples_per_s": SAMPLES_PER_S},
              "systems": {}}
    with tempfile.TemporaryDirectory(prefix="aidb-bench-profile-") as scratch, \
            model_server(API_KEY) as server:
        warm_cache(server.url, API_KEY, SERVER_MODEL, dims, texts)
        with pg_cluster() as cluster:
            drain = ProfiledDrain(cluster, server, texts, dims, batch, scratch)
            for system in SYSTEMS:
                timed = drain.timed(system)
                profile = drain.profiled(system)
                result["systems"][system] = {**timed, "gil_profile": profile}
                print(f"profile: {SYSTEMS[system]}: {timed['steady_rows_per_s']} rows/s, CPU ms/row "
                      f"{timed['cpu_ms_per_row']}, busy {timed['busy_of_cores']:.0%}; "
                      f"GIL samples {profile['libraries']}", flush=True)
    result["summary"] = _summary(result["systems"])
    return result


class ProfiledDrain(Drain):
    """drain.py's Drain, its worker runs measured or profiled."""

    def __init__(self, *args):
        super().__init__(*args)
        self.profile_path = None
        self.runs = 0
        self.worker_cpu = self.worker_seconds = None

    def timed(self, system):
        """Steady rows/s and CPU ms per row of each process while the worker ran."""
        self.profile_path = None
        drained = getattr(self, system)(self._dbname(system))
        rows = drained["rows"]
        cpu = {part: round(1000 * seconds / rows, 3) for part, seconds in self.worker_cpu.items()}
        busy = sum(self.worker_cpu.values()) / self.worker_seconds / os.cpu_count()
        return {**drained, "cpu_ms_per_row": cpu, "busy_of_cores": round(busy, 3)}

    def profiled(self, system):
        """The worker's GIL samples of one more drain, by library."""
        self.profile_path = os.path.join(self.scratch, f"{system}.txt")
        getattr(self, system)(self._dbname(system))
        return gil_profile(self.profile_path)

    def run_worker(self, command, dbname, env=None):
        """The worker's run, its CPU counted from its start to its end (the
        setup before it, the table's rows among it, stays out)."""
        if self.profile_path is not None:
            command = [PY_SPY, "record", "--gil", "-r", str(SAMPLES_PER_S), "-f", "raw",
                       "-o", self.profile_path, "--", *command]
        before, started = self._cpu_seconds(), time.monotonic()
        super().run_worker(command, dbname, env)
        self.worker_seconds = time.monotonic() - started
        after = self._cpu_seconds()
        self.worker_cpu = {part: after[part] - before[part] for part in before}

    def _dbname(self, system):
        self.runs += 1
        return f"profile_{system}_{self.runs}"

    def _cpu_seconds(self):
        """CPU seconds so far of the worker processes (waited-for children of
        this one), PostgreSQL and the model server."""
        times = os.times()
        with open(os.path.join(self.cluster.datadir, "postmaster.pid")) as f:
            postmaster = int(f.readline())
        postgres = _proc_cpu(postmaster, reaped=True) + sum(
            _proc_cpu(pid) for pid in _children(postmaster))
        return {"worker": times.children_user + times.children_system,
                "postgres": postgres, "model_server": _proc_cpu(self.server.pid)}


def _proc_cpu(pid, reaped=False):
    """utime + stime of a process (and of its waited-for children), seconds."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if reaped:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except FileNotFoundError:
        return []


def gil_profile(path):
    """{libraries: {name: share of steady samples}, startup_share, top: [...]}
    from py-spy's raw output (one "frame;frame;... count" line per stack)."""
    libraries, functions = collections.Counter(), collections.Counter()
    total = startup = 0
    with open(path) as f:
        for line in f:
            stack, count = line.rstrip("\n").rsplit(" ", 1)
            count = int(count)
            total += count
            if STARTUP.search(stack):
                startup += count
                continue
            innermost = stack.split(";")[-1]
            libraries[_library(innermost)] += count
            functions[re.sub(r":\d+\)$", ")", innermost)] += count
    steady = max(total - startup, 1)
    return {"samples": total, "startup_share": round(startup / max(total, 1), 3),
            "libraries": {name: round(n / steady, 3) for name, n in libraries.most_common()},
            "top_functions": [(name, round(n / steady, 3)) for name, n in functions.most_common(15)]}


def _library(frame):
    for name, pattern in LIBRARIES:
        if re.search(pattern, frame):
            return name
    return "other"


def _summary(systems):
    rows = []
    for system, r in systems.items():
        label = SYSTEMS[system]
        cpu = r["cpu_ms_per_row"]
        rows.append(summary_row("profile", f"{label}: rows/s steady, 0 ms", f"{r['steady_rows_per_s']:.0f}"))
        rows.append(summary_row("profile", f"{label}: CPU ms per row, worker / PostgreSQL / server",
                                f"{cpu['worker']:.3f} / {cpu['postgres']:.3f} / {cpu['model_server']:.3f}"))
        rows.append(summary_row("profile", f"{label}: cores busy", f"{r['busy_of_cores']:.0%}"))
        shares = ", ".join(f"{name} {share:.0%}" for name, share in
                           list(r["gil_profile"]["libraries"].items())[:6])
        rows.append(summary_row("profile", f"{label}: worker's Python by library (GIL samples)", shares))
    return rows


def plot(result, path):
    fig, ax = new_figure(7, 4)
    systems = list(result["systems"])
    grouped_bars(ax, [SYSTEMS[s] for s in systems],
                 {part: [result["systems"][s]["cpu_ms_per_row"][part] for s in systems]
                  for part in ("worker", "postgres", "model_server")},
                 "CPU ms per row (lower is better)", fmt="%.3f")
    p = result["parameters"]
    ax.set_title(f"Where a 0 ms drain's CPU goes: {p['rows']} rows, {p['dims']} dims, "
                 f"batch {p['batch_size']}")
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="4,000 rows instead of 20,000")
    parser.add_argument("--rows", type=int, help="rows in the table (overrides --quick)")
    parser.add_argument("--dims", type=int, default=1536, help="vector size (default 1536)")
    parser.add_argument("--batch", type=int, default=50, help="rows per batch (default 50)")
    args = parser.parse_args()
    standalone(sys.modules[__name__], {"rows": args.rows, "dims": args.dims, "batch": args.batch},
               args.quick)


if __name__ == "__main__":
    sys.exit(main())
