#!/opt/aidb-dev-venv/bin/python
"""Embedding throughput: aidb.encode_text_batch('minilm', ...) in SQL versus
the raw model it wraps (on minilm's backend: ONNX Runtime, or torch), on the
same texts.

    /opt/aidb-dev-venv/bin/python bench/encode.py [--texts N] [--batch N] [--repeat R]

The aidb side runs in a throwaway cluster. The raw side needs torch, which the
dev venv lacks, so it runs in a /usr/bin/python3 subprocess (common.raw_model_rates):
it puts the engine's dependency directory at the front of sys.path (as
aidb._engine_init() does), loads the model the way the engine's local provider
does, times itself and prints JSON. The two sides run one after the other, never
at once: torch uses every core in both.

Writes bench/results/encode-<UTC date>.json and .png. Goal: aidb/raw >= 0.9.
"""

import argparse
import os
import sys

from common import (ROOT, RESULTS_DIR, machine_info, make_sentences, pass_rates, pg_cluster,
                    raw_model_rates, save_json, utc_date)

MODEL = "minilm"
GOAL = 0.9


# --- aidb side (dev venv) -----------------------------------------------------------------

def bench_aidb(cluster, texts, args):
    """Embeddings/s of each pass through SQL, plus the engine directory, the
    model's inner batch size and its backend, so that the raw side can use
    exactly the same ones."""
    import psycopg
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION aidb CASCADE")
        engine_dir, model_batch, backend = conn.execute(
            "SELECT aidb._engine_dir(), (config->>'max_batch_size')::int,"
            " coalesce(config->>'backend', 'torch')"
            " FROM aidb.model_registry WHERE name = %s", (MODEL,)).fetchone()

        def encode(chunk):
            vectors = conn.execute("SELECT aidb.encode_text_batch(%s, %s)",
                                   (MODEL, chunk)).fetchone()[0]
            assert vectors, "no embeddings returned"

        rates = pass_rates(texts, args.batch, args.repeat, encode)
    return rates, engine_dir, model_batch, backend


# --- report -------------------------------------------------------------------------------

def write_results(report):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stem = os.path.join(RESULTS_DIR, f"encode-{report['date']}")
    save_json(report, stem + ".json")

    rates = report["rates"]
    fig, ax = plt.subplots(figsize=(5, 4))
    bars = ax.bar(["aidb.encode_text_batch", "raw model"],
                  [rates["aidb"], rates["raw"]], color=["tab:blue", "tab:gray"])
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylabel("embeddings / s (higher is better)")
    p = report["parameters"]
    ax.set_title(f"all-MiniLM-L6-v2, {p['texts']} texts, batch {p['batch']}\n"
                 f"aidb/raw = {report['ratio']:.2f} ({report['machine']['nproc']} CPUs)")
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=100)
    return stem


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=2000, help="corpus size (default 2000)")
    parser.add_argument("--batch", type=int, default=256, help="texts per call (default 256)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes, best kept (default 3)")
    args = parser.parse_args()

    texts = make_sentences(args.texts)
    print(f"aidb side: {args.texts} texts, batch {args.batch}, best of {args.repeat} ...")
    with pg_cluster() as cluster:
        aidb_passes, engine_dir, model_batch, backend = bench_aidb(cluster, texts, args)
    # Only now, with the aidb session closed, does the raw side start.
    print("raw side ...")
    raw_passes = raw_model_rates(texts, args.batch, args.repeat, engine_dir, model_batch,
                                 backend)

    aidb_rate, raw_rate = max(aidb_passes), max(raw_passes)  # best of R
    ratio = aidb_rate / raw_rate
    report = {
        "date": utc_date(),
        "machine": machine_info(),
        "parameters": {"texts": args.texts, "batch": args.batch, "repeat": args.repeat,
                       "model": MODEL, "backend": backend, "model_batch_size": model_batch},
        "rates": {"aidb": aidb_rate, "raw": raw_rate},  # embeddings/s, best pass
        "passes": {"aidb": aidb_passes, "raw": raw_passes},
        "ratio": round(ratio, 3),
        "goal": GOAL,
    }
    stem = write_results(report)

    print(f"\n{'side':<24}{'embeddings/s':>14}")
    print(f"{'aidb.encode_text_batch':<24}{aidb_rate:>14.1f}")
    print(f"{'raw model':<24}{raw_rate:>14.1f}")
    verdict = "meets" if ratio >= GOAL else "MISSES"
    print(f"ratio aidb/raw = {ratio:.3f} ({verdict} the goal of >= {GOAL})")
    print(f"results: {os.path.relpath(stem, ROOT)}.json, .png")


if __name__ == "__main__":
    sys.exit(main())
