"""The destination's vector index, built once the initial backlog is drained
(building it row by row during a backfill would cost far more), with the
operator class of the pipeline's distance operator."""

from .definition import quote_ident
from .steps import knowledge_base_of

OPERATOR_CLASSES = {"L2": "vector_l2_ops", "Cosine": "vector_cosine_ops",
                    "InnerProduct": "vector_ip_ops"}
MAX_INDEXED_DIMENSIONS = 2000       # pgvector's limit for hnsw and ivfflat on vector


def index_name(pipeline):
    return f"aidb_{pipeline.id}_embedding"


def ensure_vector_index(db, pipeline):
    """Create the configured index if it is missing; returns its name or None."""
    options = knowledge_base_of(pipeline.steps)
    kind = (options or {}).get("vector_index", {}).get("type", "hnsw")
    if options is None or kind == "none":
        return None
    schema = db.query("SELECT n.nspname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                      "ON n.oid = c.relnamespace WHERE c.oid = %s::regclass", pipeline.destination)[0]
    qualified = f"{quote_ident(schema['nspname'])}.{quote_ident(index_name(pipeline))}"
    if db.query("SELECT pg_catalog.to_regclass(%s) AS r", qualified)[0]["r"] is not None:
        return index_name(pipeline)
    dimensions = db.query("SELECT pg_catalog.format_type(atttypid, atttypmod) AS t "
                          "FROM pg_catalog.pg_attribute WHERE attrelid = %s::regclass "
                          "AND attname = 'embedding'", pipeline.destination)[0]["t"]
    if int(dimensions.split("(")[1].rstrip(")")) > MAX_INDEXED_DIMENSIONS:
        db.notice(f'pipeline "{pipeline.name}": {dimensions} has more dimensions than a '
                  f"{kind} index supports ({MAX_INDEXED_DIMENSIONS}); queries scan exactly")
        return None
    db.execute(f"CREATE INDEX {quote_ident(index_name(pipeline))} ON {pipeline.destination} "
               f"USING {kind} (embedding {OPERATOR_CLASSES[options['distance_operator']]})"
               f"{_with_clause(db, pipeline, kind, options['vector_index'])}")
    db.notice(f'pipeline "{pipeline.name}": built the {kind} index {index_name(pipeline)}')
    return index_name(pipeline)


def _with_clause(db, pipeline, kind, settings):
    """Index parameters: hnsw m / ef_construction as given; ivfflat lists from
    the row count (pgvector's advice: rows / 1000, at least 10) unless given."""
    if kind == "hnsw":
        params = {k: int(settings[k]) for k in ("m", "ef_construction") if k in settings}
    else:
        rows = db.query(f"SELECT count(*) AS n FROM {pipeline.destination}")[0]["n"]
        params = {"lists": int(settings.get("lists", max(10, rows // 1000)))}
    return (" WITH (" + ", ".join(f"{k} = {v}" for k, v in params.items()) + ")") if params else ""
