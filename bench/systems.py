"""The systems the benchmarks compare, set up the same way each time: a
source table of texts, an aidb pipeline (background or external worker), and
pgai's vectorizer (PyPI pgai 0.12.1, in its own venv: setup_pgai.sh).

Every destination gets a `bench_written_at` column (default
clock_timestamp()), so that drain rates come from the times the rows were
written (each batch commits right after), without polling the database while
it works.
"""

import os
import subprocess

from psycopg import sql
from psycopg.types.json import Jsonb

from common import DEV_PYTHON, HERE, extra_model_options, extra_worker_args, run_checked

SERVER_MODEL = "text-embedding-3-small"   # the model name both systems send
API_KEY = "sk-bench-0123456789"
AIDB_MODEL = "bench"                      # aidb's name for it
AIDB_CLI = os.path.join(os.path.dirname(DEV_PYTHON), "aidb")   # the dev venv's `aidb worker`
PGAI_VENV = os.environ.get("PGAI_VENV", "/opt/pgai-venv")
PGAI_CLI = os.path.join(PGAI_VENV, "bin", "pgai")
PGAI_DESTINATION = "docs_pgai"


# --- the source table -------------------------------------------------------------------------

def create_docs(conn, texts, table="docs"):
    """Source table `table`(id int PRIMARY KEY, body text NOT NULL) holding
    `texts` with ids 1, 2, ..."""
    conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, body text NOT NULL)")
                 .format(sql.Identifier(table)))
    with conn.cursor() as cur:
        with cur.copy(sql.SQL("COPY {} (id, body) FROM STDIN").format(sql.Identifier(table))) as copy:
            for i, text in enumerate(texts, start=1):
                copy.write_row((i, text))
    conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


def add_written_at(conn, table):
    """Stamp each destination row with the time it was written."""
    conn.execute(sql.SQL("ALTER TABLE {} ADD COLUMN bench_written_at timestamptz "
                         "DEFAULT clock_timestamp()").format(sql.SQL(table)))


def db_clock(conn):
    """The server's clock, in epoch seconds (the clock bench_written_at uses)."""
    return float(conn.execute("SELECT extract(epoch FROM clock_timestamp())").fetchone()[0])


def written_span(conn, table):
    """(rows, epoch of the first row written, of the last) in a destination."""
    rows, first, last = conn.execute(sql.SQL(
        "SELECT count(*), extract(epoch FROM min(bench_written_at)), "
        "extract(epoch FROM max(bench_written_at)) FROM {}").format(sql.SQL(table))).fetchone()
    return rows, float(first or 0), float(last or 0)


def drain_rates(rows, started, first, last, batch_size):
    """Rows/s of a drain: `wall` from `started` (the moment the system was told
    to go) to the last row written, start-up included; `steady` from the
    first batch written to the last (the first batch's rows are not counted:
    they were written at the span's start)."""
    steady = (rows - batch_size) / (last - first) if last > first else None
    return {"rows": rows, "seconds": round(last - started, 3),
            "wall_rows_per_s": round(rows / (last - started), 1),
            "steady_rows_per_s": steady and round(steady, 1),
            "startup_seconds": round(first - started, 3)}


# --- aidb -------------------------------------------------------------------------------------

def aidb_setup(conn, server_url, dims):
    """CREATE EXTENSION aidb and an openai_embeddings model on the test server
    (with the options of $AIDB_BENCH_MODEL_OPTIONS)."""
    conn.execute("CREATE EXTENSION IF NOT EXISTS aidb CASCADE")
    config = {"model": SERVER_MODEL, "url": server_url + "/v1", "dimensions": dims,
              **extra_model_options()}
    conn.execute("SELECT aidb.create_model(%s, 'openai_embeddings', %s, jsonb_build_object('api_key', %s::text))",
                 (AIDB_MODEL, Jsonb(config), API_KEY))


def aidb_pipeline(conn, name, source="docs", batch_size=50, mode="Disabled", model=AIDB_MODEL):
    """A KnowledgeBase pipeline with no vector index (pgai builds none either),
    its destination stamped; returns the destination's qualified name."""
    conn.execute("""
        SELECT aidb.create_pipeline(name => %s, source => %s, source_key_column => 'id',
            source_data_column => 'body', step_1 => 'KnowledgeBase',
            step_1_options => aidb.knowledge_base_config(%s, vector_index => '{"type": "none"}'),
            auto_processing => %s, batch_size => %s)""", (name, source, model, mode, batch_size))
    destination = conn.execute("SELECT destination::text FROM aidb.pipelines WHERE name = %s",
                               (name,)).fetchone()[0]
    add_written_at(conn, destination)
    return destination


def aidb_backlog_empty(conn, names):
    """Every named pipeline's backlog is empty: its last batch has committed."""
    ids = [r[0] for r in conn.execute("SELECT id FROM aidb.pipeline_registry WHERE name = ANY (%s)",
                                      (list(names),))]
    return not any(conn.execute(f'SELECT EXISTS (SELECT FROM aidb."_backlog_{i}")').fetchone()[0]
                   for i in ids)


def aidb_set_mode(conn, names, mode):
    """Switch pipelines to `mode` in one transaction (their workers start
    together at commit); returns the server's clock just before it."""
    started = db_clock(conn)
    with conn.transaction():
        for name in names:
            conn.execute("SELECT aidb.update_pipeline(%s, auto_processing => %s)", (name, mode))
    return started


def aidb_worker_command(dsn, pipeline, concurrency=1):
    """`aidb worker --once` on one pipeline, with $AIDB_BENCH_WORKER_ARGS."""
    return [AIDB_CLI, "worker", "-d", dsn, "-i", pipeline, "--once", "-c", str(concurrency),
            "--log-level", "WARNING", *extra_worker_args()]


# --- pgai -------------------------------------------------------------------------------------

def ensure_pgai():
    """Install pgai 0.12.1 into PGAI_VENV unless it is there (setup_pgai.sh)."""
    if subprocess.run([PGAI_CLI, "--version"], capture_output=True).returncode != 0:
        subprocess.run(["bash", os.path.join(HERE, "setup_pgai.sh")], check=True,
                       env=dict(os.environ, PGAI_VENV=PGAI_VENV))


def pgai_env():
    """The worker's environment: the API key pgai reads, and the tiktoken
    files pgai ships (the default is to download them)."""
    site = subprocess.run([os.path.join(PGAI_VENV, "bin", "python"), "-c",
                           "import os, pgai; print(os.path.dirname(pgai.__file__))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    return dict(os.environ, OPENAI_API_KEY=API_KEY,
                TIKTOKEN_CACHE_DIR=os.path.join(site, "vectorizer", "tiktoken_cache"))


def pgai_install(dsn, log_path):
    """pgai's catalog (schema ai) in a plain PostgreSQL database."""
    run_checked([PGAI_CLI, "install", "-d", dsn], log_path=log_path, timeout=300)


def pgai_vectorizer(conn, server_url, dims, source="docs", batch_size=50,
                    destination=PGAI_DESTINATION):
    """A vectorizer embedding each row's body whole (chunking_none), with no
    index and no scheduler, its destination stamped; returns its id."""
    vectorizer_id = conn.execute("""
        SELECT ai.create_vectorizer(%s::regclass, name => %s,
            loading => ai.loading_column('body'), parsing => ai.parsing_none(),
            embedding => ai.embedding_openai(%s, %s, base_url => %s),
            chunking => ai.chunking_none(), indexing => ai.indexing_none(),
            scheduling => ai.scheduling_none(),
            processing => ai.processing_default(batch_size => %s),
            destination => ai.destination_table(target_table => %s))""",
                                 (source, f"{source}_v", SERVER_MODEL, dims, server_url + "/v1",
                                  batch_size, destination)).fetchone()[0]
    add_written_at(conn, destination)
    return vectorizer_id


def pgai_worker_command(dsn, concurrency=1):
    return [PGAI_CLI, "vectorizer", "worker", "-d", dsn, "--once", "-c", str(concurrency),
            "--log-level", "WARN"]


def pgai_errors(conn):
    return conn.execute("SELECT count(*) FROM ai.vectorizer_errors").fetchone()[0]


# --- checks -----------------------------------------------------------------------------------

def check_vector(conn, table, key_column, key, text, dims):
    """The stored vector of one row is what the test server returns for its text."""
    from tests.support.fake_vectors import fake_embedding
    row = conn.execute(sql.SQL("SELECT embedding::real[] FROM {} WHERE {} = %s").format(
        sql.SQL(table), sql.Identifier(key_column)), (key,)).fetchone()
    expected = fake_embedding(text, dims, SERVER_MODEL)
    if row is None or len(row[0]) != dims or any(abs(a - b) > 1e-5 for a, b in zip(row[0], expected)):
        raise AssertionError(f"{table}: the vector of key {key} is not the server's")

