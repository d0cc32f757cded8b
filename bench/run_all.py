#!/opt/aidb-dev-venv/bin/python
"""Runs every benchmark, one after the other, and writes

    bench/results/<UTC date>.json           every number, the machine, the parameters
    bench/results/<UTC date>-<name>.png     one plot per benchmark
    bench/results/<UTC date>-summary.md     the tables for docs/benchmarks.md (also printed)

    /opt/aidb-dev-venv/bin/python bench/run_all.py [--quick] [--only NAME ...]
        [--worker-arg ARG ...] [--guc NAME=VALUE ...] [--model-option NAME=JSON ...]

(<UTC date>-quick.* with --quick, so that a smoke run never replaces the
figures of a full one; a later run on a day that has results adds -<HHMM>.)
The summary starts with issue #16's table: every ratio it sets a goal for,
next to the goal, met or not (bench/goals.py); then every benchmark's own
lines.

A benchmark is a module of this directory with run(quick=False) -> dict
(name, date, parameters, summary rows, ...) and plot(result, path). One that
fails is reported in the summary and the others still run; the exit status
is then 1. --worker-arg, --guc and --model-option reach every benchmark's
`aidb worker` commands, clusters and aidb model (bench/common.py:
$AIDB_BENCH_WORKER_ARGS, $AIDB_BENCH_GUCS, $AIDB_BENCH_MODEL_OPTIONS), e.g.
to measure a worker setting.
"""

import argparse
import importlib
import os
import shlex
import sys
import time
import traceback

from common import (MODEL_OPTIONS_ENV, RESULTS_DIR, ROOT, SETTINGS_ENV, WORKER_ARGS_ENV, machine_info,
                    markdown_table, save_json, summary_row, utc_date)
from goals import goal_rows, goals_markdown

BENCHMARKS = ("drain", "write_overhead", "local_pipeline", "freshness", "scale", "scale_out",
              "retrieve", "backlog_size", "profile_drain")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark; repeatable ({', '.join(BENCHMARKS)})")
    parser.add_argument("--worker-arg", action="append", default=[], metavar="ARG",
                        help="pass ARG to every `aidb worker` (repeatable; --worker-arg=-x)")
    parser.add_argument("--guc", action="append", default=[], metavar="NAME=VALUE",
                        help="a server setting for every benchmark's cluster (repeatable)")
    parser.add_argument("--model-option", action="append", default=[], metavar="NAME=JSON",
                        help="an option of the benchmarks' openai_embeddings model (repeatable), "
                             "e.g. max_concurrent_requests=8")
    args = parser.parse_args()
    for flag, values in (("--guc", args.guc), ("--model-option", args.model_option)):
        if any("=" not in value for value in values):
            parser.error(f"{flag} takes NAME=VALUE")
    _export_settings(args.worker_arg, args.guc, args.model_option)
    date = utc_date()
    stem = results_stem(date, args.quick)
    report = {"date": date, "quick": args.quick, "loadavg_1min_before": round(os.getloadavg()[0], 2),
              "worker_args": args.worker_arg, "gucs": args.guc, "model_options": args.model_option,
              "benchmarks": {}}
    rows, failed = [], []
    for name in args.only or BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        result = run_one(name, args.quick, stem)
        report["benchmarks"][name] = result
        if "error" in result:
            failed.append(name)
            rows.append(summary_row(name, "FAILED", result["error"].strip().splitlines()[-1]))
        else:
            rows += result["summary"]
    report["machine"] = machine_info()
    report["goals"] = goal_rows(report["benchmarks"])
    save_json(report, os.path.join(RESULTS_DIR, f"{stem}.json"))
    summary = summary_markdown(report, rows, stem)
    with open(os.path.join(RESULTS_DIR, f"{stem}-summary.md"), "w") as f:
        f.write(summary)
    print("\n" + summary)
    print(f"results: {os.path.relpath(RESULTS_DIR, ROOT)}/{stem}.json, {stem}-*.png, {stem}-summary.md")
    return 1 if failed else 0


def _export_settings(worker_args, gucs, model_options):
    """Hand --worker-arg, --guc and --model-option to every benchmark
    (bench/common.py reads them)."""
    if worker_args:
        os.environ[WORKER_ARGS_ENV] = shlex.join(worker_args)
    if gucs:
        os.environ[SETTINGS_ENV] = ";".join(gucs)
    if model_options:
        os.environ[MODEL_OPTIONS_ENV] = ";".join(model_options)


def results_stem(date, quick):
    """<date>[-quick], or <date>[-quick]-<HHMM> when that day already has
    results: a second run of the day (of some benchmarks, say) must not
    replace the first one's files."""
    stem = f"{date}-quick" if quick else date
    if os.path.exists(os.path.join(RESULTS_DIR, f"{stem}.json")):
        stem += time.strftime("-%H%M", time.gmtime())
    return stem


def run_one(name, quick, stem):
    """The benchmark's result with its plot drawn, or {"error": traceback}."""
    started = time.monotonic()
    try:
        module = importlib.import_module(name)
        result = module.run(quick=quick)
        module.plot(result, os.path.join(RESULTS_DIR, f"{stem}-{name}.png"))
    except Exception:  # noqa: BLE001 — one broken benchmark must not hide the others
        traceback.print_exc()
        return {"error": traceback.format_exc(), "seconds": round(time.monotonic() - started, 1)}
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def summary_markdown(report, rows, stem):
    """The summary file: the machine, the command, issue #16's goals, every line."""
    m = report["machine"]
    mode = " (--quick: smaller sizes)" if report["quick"] else ""
    plots = ", ".join(f"`bench/results/{stem}-{name}.png`"
                      for name, result in report["benchmarks"].items() if "error" not in result)
    only = "" if set(report["benchmarks"]) == set(BENCHMARKS) else \
        "".join(f" --only {name}" for name in report["benchmarks"])
    options = "".join(f" --worker-arg={shlex.quote(a)}" for a in report["worker_args"])
    options += "".join(f" --guc {shlex.quote(g)}" for g in report["gucs"])
    options += "".join(f" --model-option {shlex.quote(o)}" for o in report["model_options"])
    return (f"### Benchmarks, {report['date']}{mode}\n\n"
            f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB memory; "
            f"load average {report['loadavg_1min_before']} before, "
            f"{m['loadavg_1min_after']} after. Command: `bench/run_all.py"
            f"{' --quick' if report['quick'] else ''}{only}{options}`.\n\n"
            f"#### Issue #16's goals\n\n{goals_markdown(report['goals'])}\n\n"
            f"#### Every benchmark\n\n{markdown_table(rows)}\n\nPlots: {plots or 'none'}.\n")


if __name__ == "__main__":
    sys.exit(main())
