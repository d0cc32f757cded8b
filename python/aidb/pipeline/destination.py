"""The destination table: source key, part id, the value that was embedded,
its embedding (when the pipeline ends with KnowledgeBase), updated_at."""

from ..errors import AidbError, InvalidInput, INSUFFICIENT_PRIVILEGE
from .definition import quote_ident
from ..sqltext import ident, quoted, sql

INVALID_SCHEMA_NAME = "3F000"


# pgvector's type as format_type() spells it for this session: qualified
# with its schema (the engine runs with search_path pg_catalog, pg_temp).
_VECTOR_TYPE = """
SELECT pg_catalog.format_type(t.oid, %s::pg_catalog.int4) AS t
FROM pg_catalog.pg_extension e
JOIN pg_catalog.pg_type t ON t.typnamespace = e.extnamespace AND t.typname = 'vector'
WHERE e.extname = 'vector'"""


def expected_columns(db, key_type, dimensions):
    """(name, type) of every column, in order, as format_type() spells them."""
    columns = [("source_key", key_type), ("part_id", "integer"), ("value", "text")]
    if dimensions:
        columns.append(("embedding", db.query(_VECTOR_TYPE, int(dimensions))[0]["t"]))
    return columns + [("updated_at", "timestamp with time zone")]


def resolve_destination(db, pipeline_name, destination, source_schema):
    """(schema, table, oid or None) of the destination; default
    <pipeline name>_embeddings in the source's schema."""
    if destination is None:
        parts = [source_schema, f"{pipeline_name}_embeddings"]
    else:
        try:
            parts = db.query("SELECT pg_catalog.parse_ident(%s) AS p", destination)[0]["p"]
        except Exception:  # noqa: BLE001 — parse_ident's own error is cryptic
            raise InvalidInput(f'invalid destination name "{destination}"',
                               hint='Use table or schema.table; quote unusual names ("My Table").') from None
        if len(parts) == 1:
            parts = [_current_schema(db), parts[0]]
        elif len(parts) != 2:
            raise InvalidInput(f'invalid destination name "{destination}"', hint="Use table or schema.table.")
    schema, table = parts
    if len(table.encode()) > 63:
        raise InvalidInput(f'destination table name "{table}" is longer than 63 bytes',
                           hint="Choose a shorter pipeline name, or pass destination =>.")
    rows = db.query("SELECT pg_catalog.to_regclass(%s)::oid::int AS oid",
                    f"{quote_ident(schema)}.{quote_ident(table)}")
    return schema, table, rows[0]["oid"]


def _current_schema(db):
    schema = db.resolve_with_caller_path("SELECT pg_catalog.current_schema() AS s")[0]["s"]
    if schema is None:
        raise InvalidInput("no schema is selected to create the destination in",
                           hint="Pass a schema-qualified destination.")
    return schema


def check_existing(db, oid, name, columns):
    """An existing destination must have exactly our shape."""
    found = db.query("SELECT attname, pg_catalog.format_type(atttypid, atttypmod) AS type "
                     "FROM pg_catalog.pg_attribute WHERE attrelid = %s::oid AND attnum > 0 "
                     "AND NOT attisdropped ORDER BY attnum", oid)
    if [(r["attname"], r["type"]) for r in found] != columns:
        wanted = ", ".join(f"{c} {t}" for c, t in columns)
        raise InvalidInput(f'destination table "{name}" already exists with another shape',
                           detail=f"A destination needs exactly the columns: {wanted}.",
                           hint="Pass another destination, or drop that table.")


def qualified_name(schema, table):
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def create(db, schema, table, columns, owner_role):
    """Create the destination table (as the caller, who needs CREATE on the schema)."""
    if not db.query("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", schema):
        raise AidbError(f'schema "{schema}" of destination table "{table}" does not exist',
                        sqlstate=INVALID_SCHEMA_NAME,
                        hint="Create the schema first, or pass another destination.")
    if not db.query("SELECT pg_catalog.has_schema_privilege(%s, 'CREATE') AS ok", schema)[0]["ok"]:
        raise AidbError(f'permission denied to create destination table in schema "{schema}"',
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        hint="Grant CREATE on that schema, or pass another destination.")
    qualified = qualified_name(schema, table)
    defaults = {"source_key": " NOT NULL", "part_id": " NOT NULL", "value": " NOT NULL",
                "updated_at": " NOT NULL DEFAULT pg_catalog.now()"}
    # Types as format_type() spelled them: PostgreSQL quoted them already.
    body = sql("")
    for column, column_type in columns:
        body += sql("{column} {type}" + defaults.get(column, "") + ", ",
                    column=ident(column), type=quoted(column_type))
    destination = ident(schema, table)
    db.execute(sql("CREATE TABLE {destination} ({body}PRIMARY KEY (source_key, part_id))",
                   destination=destination, body=body))
    db.execute(sql("ALTER TABLE {destination} OWNER TO {owner}",
                   destination=destination, owner=ident(owner_role)))
    return qualified
