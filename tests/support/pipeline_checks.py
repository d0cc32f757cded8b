"""Shared helpers for pipeline tests: a model on the fake OpenAI server, a
`docs` source table, and an independent recomputation of what a pipeline's
destination must hold.

expected_destination() never asks the engine: it reads the source rows
(through the pipeline's own filter), splits them with the ChunkText code the
pipeline names, and embeds each part with fake_vectors.fake_embedding — the
exact vector the fake server returns for that (model, text).
"""
from __future__ import annotations

import math

from psycopg import sql
from psycopg.rows import dict_row

from aidb.pipeline.steps.chunk_text import ChunkText

from .fake_vectors import fake_embedding

MODEL = "fake"                       # aidb's name for the model
SERVER_MODEL = "text-embedding-test"  # the name sent to the server (seeds the vectors)
DIMS = 8                              # the test server's default size
VECTOR_TOLERANCE = 1e-5


def create_fake_model(conn, server_url, api_key, name=MODEL, replace_credentials=False):
    """An openai_embeddings model on the test server (two quick retries, 5 s timeout)."""
    conn.execute("""
        SELECT aidb.create_model(%s, 'openai_embeddings',
            jsonb_build_object('model', %s::text, 'url', %s::text || '/v1',
                               'max_retries', 2, 'timeout', 5),
            jsonb_build_object('api_key', %s::text),
            replace_credentials => %s)""",
                 (name, SERVER_MODEL, server_url, api_key, replace_credentials))


def create_docs(conn, rows=()):
    """The source table docs(id, body, published_time), filled with (id, body[, published])."""
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text, published_time timestamptz)")
    insert_docs(conn, rows)


def insert_docs(conn, rows):
    rows = [tuple(row) + (None,) * (3 - len(row)) for row in rows]
    if rows:
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO docs (id, body, published_time) VALUES (%s, %s, %s)", rows)


def create_pipeline(conn, name="p", source="docs", chunk_length=None, **options):
    """A KnowledgeBase pipeline on MODEL (ChunkText first if chunk_length is
    given); `options` are further create_pipeline arguments by name."""
    steps = ["step_1 => 'KnowledgeBase', step_1_options => aidb.knowledge_base_config(%s)"]
    params = [MODEL]
    if chunk_length is not None:
        steps = ["step_1 => 'ChunkText', step_1_options => aidb.chunk_text_config(%s)",
                 "step_2 => 'KnowledgeBase', step_2_options => aidb.knowledge_base_config(%s)"]
        params = [chunk_length, MODEL]
    named = [sql.SQL("{} => {}").format(sql.Identifier(k), sql.Literal(v))
             for k, v in options.items()]
    statement = sql.SQL("SELECT aidb.create_pipeline(name => %s, source => %s, "
                        "source_data_column => 'body', {})").format(
        sql.SQL(", ").join([sql.SQL(s) for s in steps] + named))
    conn.execute(statement, [name, source, *params])


def run_pipeline(conn, name="p"):
    conn.execute("SELECT aidb.run_pipeline(%s)", (name,))


def metrics(conn, name="p"):
    """The pipeline's row of aidb.pipem, as a dict."""
    cur = conn.execute("SELECT * FROM aidb.pipem WHERE pipeline = %s", (name,))
    columns = [c.name for c in cur.description]
    return dict(zip(columns, cur.fetchone()))


def pending(conn, name="p"):
    """Distinct keys waiting in the backlog."""
    return metrics(conn, name)["table: unprocessed rows"]


def pipeline_errors(conn, name="p"):
    """[(source_key, category, message)] of aidb.pipeline_errors."""
    return conn.execute("SELECT source_key, category, message FROM aidb.pipeline_errors "
                        "WHERE pipeline = %s ORDER BY source_key NULLS FIRST, category",
                        (name,)).fetchall()


def _definition(conn, name):
    """The pipeline's source, columns, filter, steps and destination, and the
    model name its KnowledgeBase sends to the server (which seeds the vectors)."""
    return conn.cursor(row_factory=dict_row).execute("""
        SELECT p.source, p.source_key_column AS key, p.source_data_column AS data,
               p.source_filter, p.steps, p.destination, m.config->>'model' AS server_model
        FROM aidb.pipelines p
        JOIN aidb.models m ON m.name = p.steps->-1->'options'->>'model'
        WHERE p.name = %s""", (name,)).fetchone()


def _parts(text, steps):
    """The texts a pipeline embeds for one source value (its ChunkText steps)."""
    texts = [text]
    for step in steps:
        if step["operation"] == "ChunkText":
            texts = [piece for t in texts for piece in ChunkText(step["options"]).run(t)]
    return texts


def expected_destination(conn, name="p"):
    """{(key, part id): (value, vector)} that the destination of pipeline
    `name` must hold for the source rows as they are now."""
    p = _definition(conn, name)
    query = sql.SQL("SELECT {key}, {data}::text FROM {source} "
                    "WHERE {data} IS NOT NULL AND ({condition}\n)").format(
        key=sql.Identifier(p["key"]), data=sql.Identifier(p["data"]),
        source=sql.SQL(p["source"]), condition=sql.SQL(p["source_filter"] or "true"))
    expected = {}
    for key, text in conn.execute(query):
        for part_id, part in enumerate(_parts(text, p["steps"])):
            expected[(key, part_id)] = (part, fake_embedding(part, DIMS, p["server_model"]))
    return expected


def destination_contents(conn, name="p"):
    """{(key, part id): (value, vector)} as the destination holds them."""
    rows = conn.execute(sql.SQL("SELECT source_key, part_id, value, embedding::real[] FROM {}")
                        .format(sql.SQL(_definition(conn, name)["destination"])))
    return {(key, part_id): (value, vector) for key, part_id, value, vector in rows}


def assert_consistent(conn, name="p", except_keys=()):
    """The destination holds exactly what the source rows call for: the same
    keys and part ids, the same values, vectors within VECTOR_TOLERANCE.
    Keys in `except_keys` must have no destination rows at all."""
    expected = {k: v for k, v in expected_destination(conn, name).items() if k[0] not in except_keys}
    actual = destination_contents(conn, name)
    missing = sorted(expected.keys() - actual.keys())
    extra = sorted(actual.keys() - expected.keys())
    assert not missing and not extra, f"missing (key, part): {missing[:10]}, extra: {extra[:10]}"
    for part, (value, vector) in expected.items():
        actual_value, actual_vector = actual[part]
        assert actual_value == value, f"{part}: value {actual_value!r}, expected {value!r}"
        assert len(actual_vector) == len(vector) and all(
            math.isclose(a, b, abs_tol=VECTOR_TOLERANCE) for a, b in zip(actual_vector, vector)), \
            f"{part}: vector {actual_vector} differs from {vector}"
    return len(expected)


def destination_keys(conn, name="p"):
    return {key for key, _ in destination_contents(conn, name)}
