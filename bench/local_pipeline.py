#!/opt/aidb-dev-venv/bin/python
"""Local-model throughput through a pipeline: aidb.run_pipeline on N rows
embedded with the bundled `minilm` model, against the raw model on the same
texts in the same batches.

    /opt/aidb-dev-venv/bin/python bench/local_pipeline.py [--quick] [--rows 2000]
        [--batch 100] [--repeat 3]

The aidb side runs in a throwaway cluster: the ~60-word texts of drain.py in
docs(id, body); the session loads the model first (one aidb.encode_text),
then each pass creates a fresh Disabled pipeline on the table (KnowledgeBase
with minilm, no vector index) and times aidb.run_pipeline over every row:
reading the source, embedding, writing the destination, all in SQL.

The raw side is the sentence-transformers model itself
(common.RawModel, a /usr/bin/python3 subprocess with the engine's
dependencies that stays up between passes, as in encode.py), on the same texts, in chunks of the
pipeline's batch size, with the model's own inner batch size.

Both sides warm up on one chunk, then take turns, one pass each per round
(torch uses every core, so they never overlap), and the figure is the median of the rounds' paired
ratios: this machine's speed drifts by 10-25 % over minutes, which made a
"best pass of each side, one side after the other" comparison swing from
0.9 to 1.25. Goal: aidb/raw >= 0.9.
"""

import argparse
import statistics
import sys
import time

from common import (RawModel, connect, make_texts, new_figure, pg_cluster, ratio,
                    save_figure, standalone, summary_row, utc_date, verdict)
from systems import aidb_pipeline, create_docs

MODEL = "minilm"
GOAL = 0.9


def run(quick=False, rows=None, batch=100, repeat=5):
    rows = rows or (500 if quick else 2000)
    texts = make_texts(rows)
    aidb_passes, raw_passes = [], []
    with pg_cluster() as cluster, connect(cluster, "postgres") as conn:
        engine_dir, model_batch = prepare(conn, texts, batch)
        with RawModel(engine_dir, model_batch) as raw:
            raw.warm_up(texts[:batch])
            for n in range(repeat):
                aidb_passes.append(pipeline_pass(conn, texts, batch, n))
                raw_passes.append(raw.pass_rate(texts, batch))
            print(f"local pipeline: round {n + 1}: aidb {aidb_passes[-1]} rows/s, "
                  f"raw {raw_passes[-1]} rows/s", flush=True)
    ratios = [ratio(a, r) for a, r in zip(aidb_passes, raw_passes)]
    value = statistics.median(ratios)
    rates = {"aidb": statistics.median(aidb_passes), "raw": statistics.median(raw_passes)}
    return {"name": "local_pipeline", "date": utc_date(),
            "parameters": {"rows": rows, "words_per_text": 60, "batch_size": batch,
                           "repeat": repeat, "model": MODEL, "model_batch_size": model_batch},
            "rates": rates, "passes": {"aidb": aidb_passes, "raw": raw_passes},
            "round_ratios": ratios, "ratio": value, "goal": GOAL,
            "summary": [summary_row("local model", f"run_pipeline, {MODEL} (rows/s, median)",
                                    f"{rates['aidb']:.0f}"),
                        summary_row("local model", "raw model, same texts (rows/s, median)",
                                    f"{rates['raw']:.0f}"),
                        summary_row("local model", "pipeline / raw model (median of paired rounds)",
                                    f"{value:.2f}", f">= {GOAL}", verdict(value, GOAL))]}


def prepare(conn, texts, batch):
    """aidb and the source table, the model loaded and warmed up on a chunk
    (as the raw side is); returns the engine directory and the model's inner
    batch size (for the raw side)."""
    conn.execute("CREATE EXTENSION aidb CASCADE")
    engine_dir, model_batch = conn.execute(
        "SELECT aidb._engine_dir(), (config->>'max_batch_size')::int"
        " FROM aidb.model_registry WHERE name = %s", (MODEL,)).fetchone()
    create_docs(conn, texts)
    conn.execute("SELECT aidb.encode_text_batch(%s, %s)", (MODEL, texts[:batch]))
    return engine_dir, model_batch


def pipeline_pass(conn, texts, batch, n):
    """Rows/s of run_pipeline over every row, on a fresh Disabled pipeline."""
    destination = aidb_pipeline(conn, f"local_{n}", batch_size=batch, model=MODEL)
    started = time.perf_counter()
    conn.execute("SELECT aidb.run_pipeline(%s)", (f"local_{n}",))
    rate = round(len(texts) / (time.perf_counter() - started), 1)
    stored = conn.execute(f"SELECT count(*) FROM {destination} WHERE embedding IS NOT NULL"
                          ).fetchone()[0]
    if stored != len(texts):
        raise AssertionError(f"{destination} holds {stored} embeddings, expected {len(texts)}")
    return rate


def plot(result, path):
    fig, ax = new_figure(5, 4)
    bars = ax.bar(["aidb.run_pipeline", "raw model"],
                  [result["rates"]["aidb"], result["rates"]["raw"]],
                  color=["tab:blue", "tab:gray"])
    ax.bar_label(bars, fmt="%.0f")
    ax.set_ylabel("rows / s (higher is better)")
    p = result["parameters"]
    ax.set_title(f"all-MiniLM-L6-v2: {p['rows']} texts of ~{p['words_per_text']} words,\n"
                 f"batch {p['batch_size']}: pipeline/raw = {result['ratio']:.2f}")
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="500 rows instead of 2,000")
    parser.add_argument("--rows", type=int, help="rows embedded per pass (overrides --quick)")
    parser.add_argument("--batch", type=int, default=100, help="pipeline batch size (100)")
    parser.add_argument("--repeat", type=int, default=5, help="rounds, one pass of each side (5)")
    args = parser.parse_args()
    standalone(sys.modules[__name__], {"rows": args.rows, "batch": args.batch,
                                       "repeat": args.repeat}, args.quick)


if __name__ == "__main__":
    sys.exit(main())
