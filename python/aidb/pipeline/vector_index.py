"""The destination's vector index, built once the initial backlog is drained
(building it row by row during a backfill would cost far more), with the
operator class of the pipeline's distance operator."""

from ..sqltext import ident, quoted, sql
from .distance import operator_class
from .steps import knowledge_base_of

MAX_INDEXED_DIMENSIONS = 2000       # pgvector's limit for hnsw and ivfflat on vector


def index_name(pipeline):
    return f"aidb_{pipeline.id}_embedding"


def ensure_vector_index(db, pipeline):
    """Create the configured index if it is missing; returns its name or None."""
    options = knowledge_base_of(pipeline.steps)
    kind = (options or {}).get("vector_index", {}).get("type", "hnsw")
    if options is None or kind == "none":
        return None
    rows = db.query(_FACTS, index_name(pipeline), pipeline.destination)
    if not rows:
        return None         # not a plain table any more (see _FACTS)
    facts = rows[0]
    if facts["exists"]:
        return index_name(pipeline)
    # Several workers can finish the backlog at once: one builds the index
    # (one advisory lock, held to the end of its transaction), the others go
    # on without waiting and find it built next time.
    if not db.query(_BUILDER, pipeline.id)[0]["ok"]:
        return None
    if db.query(_FACTS, index_name(pipeline), pipeline.destination)[0]["exists"]:
        return index_name(pipeline)     # built and committed just before we got the lock
    if facts["dimensions"] > MAX_INDEXED_DIMENSIONS:
        db.notice(f'pipeline "{pipeline.name}": vector({facts["dimensions"]}) has more dimensions '
                  f"than a {kind} index supports ({MAX_INDEXED_DIMENSIONS}); queries scan exactly")
        return None
    db.execute(sql("CREATE INDEX {index} ON {destination} USING {method} (embedding {opclass})",
                   index=ident(index_name(pipeline)), destination=pipeline.destination_name,
                   method=ident(kind),
                   opclass=ident(facts["vector_schema"], operator_class(options["distance_operator"])))
               + _with_clause(db, pipeline, kind, options["vector_index"])
               + _scope(db, pipeline))
    db.notice(f'pipeline "{pipeline.name}": built the {kind} index {index_name(pipeline)}')
    return index_name(pipeline)


# The advisory lock of "building pipeline <id>'s vector index" (class 0x41494458, 'AIDX').
_BUILDER = "SELECT pg_catalog.pg_try_advisory_xact_lock(1095320664, %s::pg_catalog.int4) AS ok"

# Whether the index exists already, the embedding's dimensions, and the
# schema of pgvector's operator classes (the engine's search_path is
# pg_catalog only).
_FACTS = """
SELECT EXISTS (SELECT FROM pg_catalog.pg_class i
               WHERE i.relname = %s AND i.relnamespace = d.relnamespace) AS exists,
       a.atttypmod AS dimensions,
       (SELECT n.nspname FROM pg_catalog.pg_extension e
        JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
        WHERE e.extname = 'vector') AS vector_schema
FROM pg_catalog.pg_class d
JOIN pg_catalog.pg_attribute a ON a.attrelid = d.oid AND a.attname = 'embedding'
WHERE d.oid = %s::pg_catalog.regclass
  -- Plain tables only: on PostgreSQL 15 the owner can turn an empty table
  -- into a view (CREATE RULE "_RETURN"), whose functions would run with the
  -- rights of whoever builds the index.
  AND d.relkind IN ('r', 'p')"""


def _scope(db, pipeline):
    """A shared destination (sql/ext/26_shared_destinations.sql): each
    pipeline indexes its own rows (a partial index, which retrieval's
    "pipeline = <name>" condition selects), of the size it would have alone."""
    row = db.query("SELECT aidb._destination_is_shared(r.destination) AS shared, "
                   "pg_catalog.quote_literal(r.name) AS name "
                   "FROM aidb.pipeline_registry r WHERE r.id = %s", pipeline.id)[0]
    if not row["shared"]:
        return sql("")
    # The name as PostgreSQL quoted it (a literal): a %s or {x} in it stays text.
    return sql(" WHERE pipeline OPERATOR(pg_catalog.=) {name}", name=quoted(row["name"]))


def _with_clause(db, pipeline, kind, settings):
    """Index parameters: hnsw m / ef_construction as given; ivfflat lists from
    the row count (pgvector's advice: rows / 1000, at least 10) unless given."""
    if kind == "hnsw":
        params = {k: int(settings[k]) for k in ("m", "ef_construction") if k in settings}
    else:
        rows = db.query(sql("SELECT pg_catalog.count(*) AS n FROM {destination}",
                            destination=pipeline.destination_name) + _scope(db, pipeline))[0]["n"]
        params = {"lists": int(settings.get("lists", max(10, rows // 1000)))}
    # The parameters are integers (int() above), so they can be part of the text.
    return sql(" WITH (" + ", ".join(f"{k} = {v}" for k, v in params.items()) + ")") if params else sql("")
