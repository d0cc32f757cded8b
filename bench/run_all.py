#!/opt/aidb-dev-venv/bin/python
"""Runs every benchmark, one after the other, and writes

    bench/results/<UTC date>.json           every number, the machine, the parameters
    bench/results/<UTC date>-<name>.png     one plot per benchmark
    bench/results/<UTC date>-summary.md     the table for docs/benchmarks.md (also printed)

    /opt/aidb-dev-venv/bin/python bench/run_all.py [--quick] [--only NAME ...]

A benchmark is a module of this directory with run(quick=False) -> dict
(name, date, parameters, summary rows, ...) and plot(result, path). One that
fails is reported in the summary and the others still run; the exit status
is then 1.
"""

import argparse
import importlib
import os
import sys
import time
import traceback

from common import (RESULTS_DIR, ROOT, machine_info, markdown_table, save_json, summary_row,
                    utc_date)

BENCHMARKS = ("drain", "write_overhead", "local_pipeline", "freshness", "scale", "retrieve",
              "backlog_size")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    parser.add_argument("--only", action="append", choices=BENCHMARKS, metavar="NAME",
                        help=f"run only this benchmark; repeatable ({', '.join(BENCHMARKS)})")
    args = parser.parse_args()
    date = utc_date()
    report = {"date": date, "quick": args.quick, "loadavg_1min_before": round(os.getloadavg()[0], 2),
              "benchmarks": {}}
    rows, failed = [], []
    for name in args.only or BENCHMARKS:
        print(f"\n=== {name} ===", flush=True)
        result = run_one(name, args.quick, date)
        report["benchmarks"][name] = result
        if "error" in result:
            failed.append(name)
            rows.append(summary_row(name, "FAILED", result["error"].strip().splitlines()[-1]))
        else:
            rows += result["summary"]
    report["machine"] = machine_info()
    save_json(report, os.path.join(RESULTS_DIR, f"{date}.json"))
    summary = summary_markdown(report, rows)
    with open(os.path.join(RESULTS_DIR, f"{date}-summary.md"), "w") as f:
        f.write(summary)
    print("\n" + summary)
    print(f"results: {os.path.relpath(RESULTS_DIR, ROOT)}/{date}.json, {date}-*.png, {date}-summary.md")
    return 1 if failed else 0


def run_one(name, quick, date):
    """The benchmark's result with its plot drawn, or {"error": traceback}."""
    started = time.monotonic()
    try:
        module = importlib.import_module(name)
        result = module.run(quick=quick)
        module.plot(result, os.path.join(RESULTS_DIR, f"{date}-{name}.png"))
    except Exception:  # noqa: BLE001 — one broken benchmark must not hide the others
        traceback.print_exc()
        return {"error": traceback.format_exc(), "seconds": round(time.monotonic() - started, 1)}
    result["seconds"] = round(time.monotonic() - started, 1)
    return result


def summary_markdown(report, rows):
    m = report["machine"]
    mode = " (--quick: smaller sizes)" if report["quick"] else ""
    plots = ", ".join(f"`bench/results/{report['date']}-{name}.png`"
                      for name, result in report["benchmarks"].items() if "error" not in result)
    return (f"### Benchmarks, {report['date']}{mode}\n\n"
            f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB memory; "
            f"load average {report['loadavg_1min_before']} before, "
            f"{m['loadavg_1min_after']} after. Command: `bench/run_all.py"
            f"{' --quick' if report['quick'] else ''}`.\n\n"
            f"{markdown_table(rows)}\n\nPlots: {plots or 'none'}.\n")


if __name__ == "__main__":
    sys.exit(main())
