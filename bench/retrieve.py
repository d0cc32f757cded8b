#!/opt/aidb-dev-venv/bin/python
"""Retrieval: query latency of aidb.retrieve_key with and without the
pipeline's HNSW index, and the index's recall@10 against an exact scan.

    /opt/aidb-dev-venv/bin/python bench/retrieve.py [--rows 100000] [--queries 50] [--quick]

A throwaway cluster and the OpenAI-compatible test server (384 dimensions,
so the query embedding is one loopback round trip). The destination of a
Cosine pipeline is filled directly with `--rows` synthetic vectors drawn
around 100 random centres (clustered, like real embeddings; uniform random
vectors in 384 dimensions have no near neighbours at all). Each query text
is embedded by the server, then answered by an exact scan (no index yet),
then the HNSW index is built as the pipeline builds it, and the same
queries are answered through it. Latency is measured at the client around
`SELECT * FROM aidb.retrieve_key(...)`, so it includes embedding the query.

Writes bench/results/retrieve-<UTC date>.json and .png.
"""

import argparse
import random
import statistics
import sys
import time

from common import (connect, make_sentences, model_server, new_figure, pg_cluster, save_figure,
                    standalone, summary_row, utc_date)
from tests.support.pipeline_checks import create_fake_model

API_KEY = "sk-bench-retrieve"      # common.model_server always sets one; nothing secret
DIMS = 384
CENTRES = 100
TOPK = 10

CENTRES_SQL = f"""
    CREATE TABLE centres AS
        SELECT c, (SELECT array_agg(random() - 0.5) FROM generate_series(1, {DIMS}) WHERE c > 0) AS v
        FROM generate_series(1, {CENTRES}) c"""
FILL_SQL = f"""
    INSERT INTO docs_embeddings (source_key, part_id, value, embedding)
    SELECT g, 0, 'document ' || g,
           (SELECT array_agg(ce.v[i] + (random() - 0.5) * 0.4 + g * 0)
            FROM generate_series(1, {DIMS}) i)::vector
    FROM generate_series(1, %s) g JOIN centres ce ON ce.c = 1 + g %% {CENTRES}"""


def run(quick=False, rows=100_000, queries=50):
    rows = min(rows, 20_000) if quick else rows
    texts = make_sentences(queries, seed=7)
    with pg_cluster() as cluster, model_server(API_KEY, dims=DIMS, cache=False) as server, \
            connect(cluster, "postgres") as conn:
        setup(conn, server, rows)
        samples = sample_queries(conn, queries)
        exact_ms = timed_queries(conn, texts)
        exact = nearest(conn, samples)
        build_seconds = build_index(conn)
        index_ms = timed_queries(conn, texts)
        approximate = nearest(conn, samples)
    recall = statistics.mean(len(set(e) & set(a)) / TOPK for e, a in zip(exact, approximate))
    result = {"name": "retrieve", "date": utc_date(),
              "parameters": {"rows": rows, "queries": queries, "dims": DIMS, "topk": TOPK,
                             "index": "hnsw (m 16, ef_construction 64, ef_search 40)"},
              "exact_ms": _stats(exact_ms), "hnsw_ms": _stats(index_ms),
              "index_build_seconds": round(build_seconds, 1), "recall_at_10": round(recall, 3)}
    result["summary"] = [
        summary_row("retrieve", f"p50 latency, exact scan of {rows} rows",
                    f"{result['exact_ms']['p50']:.1f} ms"),
        summary_row("retrieve", "p50 latency, HNSW index", f"{result['hnsw_ms']['p50']:.1f} ms"),
        summary_row("retrieve", "speed-up", f"{result['exact_ms']['p50'] / result['hnsw_ms']['p50']:.1f}x"),
        summary_row("retrieve", "recall@10 of the index", f"{recall:.3f}")]
    return result


def setup(conn, server, rows):
    """A Cosine pipeline whose destination holds `rows` synthetic vectors."""
    conn.execute("CREATE EXTENSION aidb CASCADE")
    create_fake_model(conn, server.url, API_KEY)
    conn.execute("UPDATE aidb.model_registry SET config = config || %s::jsonb WHERE name = 'fake'",
                 (f'{{"dimensions": {DIMS}}}',))
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text)")
    conn.execute("SELECT aidb.create_pipeline('docs', 'docs', source_data_column => 'body', "
                 "step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config("
                 "'fake', distance_operator => 'Cosine'))")
    conn.execute(CENTRES_SQL)
    conn.execute(FILL_SQL, (rows,))
    conn.execute("ANALYZE docs_embeddings")


def build_index(conn):
    """The index run_pipeline builds once a backlog drains (same name, same opclass)."""
    started = time.monotonic()
    conn.execute("SET maintenance_work_mem = '512MB'")
    conn.execute("CREATE INDEX aidb_1_embedding ON docs_embeddings "
                 "USING hnsw (embedding vector_cosine_ops)")
    return time.monotonic() - started


def timed_queries(conn, texts):
    """Milliseconds per retrieve_key query (embedding the text included)."""
    conn.execute("SELECT * FROM aidb.retrieve_key('docs', 'warm up', 1)")   # engine loaded
    times = []
    for text in texts:
        started = time.perf_counter()
        conn.execute("SELECT key FROM aidb.retrieve_key('docs', %s, %s, deduplicate => false)",
                     (text, TOPK)).fetchall()
        times.append(1000 * (time.perf_counter() - started))
    return times


def sample_queries(conn, count):
    """Query vectors near the data: stored vectors plus a little noise (the
    test server's query vectors are random, far from every cluster, where
    "nearest" is a near tie and recall says little). Fixed, so the exact
    and the index answers are to the same questions."""
    rng = random.Random(11)
    queries = []
    for i in range(count):
        stored = conn.execute("SELECT embedding::text FROM docs_embeddings WHERE source_key = %s",
                              (1 + (i * 7919) % 1000,)).fetchone()[0]
        values = [float(x) + rng.uniform(-0.1, 0.1) for x in stored.strip("[]").split(",")]
        queries.append("[" + ",".join(f"{v:.6f}" for v in values) + "]")
    return queries


def nearest(conn, queries):
    """Top keys of each query vector, the way retrieve_key asks for them."""
    return [[r[0] for r in conn.execute(
        "SELECT source_key FROM docs_embeddings ORDER BY embedding <=> %s::vector LIMIT %s",
        (query, TOPK)).fetchall()] for query in queries]


def _stats(values):
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 2),
            "p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
            "mean": round(statistics.mean(ordered), 2)}


def plot(result, path):
    fig, ax = new_figure()
    labels = ["exact scan", "HNSW index"]
    values = [result["exact_ms"]["p50"], result["hnsw_ms"]["p50"]]
    ax.bar(labels, values, color=["#999999", "#2a7ab9"])
    ax.set_ylabel("p50 query latency (ms)")
    ax.set_title(f"retrieve_key over {result['parameters']['rows']} rows, "
                 f"recall@10 {result['recall_at_10']:.3f}")
    for x, value in enumerate(values):
        ax.annotate(f"{value:.1f}", (x, value), ha="center", va="bottom")
    save_figure(fig, path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="vectors in the destination (100000)")
    parser.add_argument("--queries", type=int, default=50, help="query texts (50)")
    parser.add_argument("--quick", action="store_true", help="at most 20000 rows")
    args = parser.parse_args()
    standalone(sys.modules[__name__], {"rows": args.rows, "queries": args.queries}, args.quick)


if __name__ == "__main__":
    sys.exit(main())
