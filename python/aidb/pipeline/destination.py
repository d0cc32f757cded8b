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
    if _columns_of(db, oid) != columns:
        wanted = ", ".join(f"{c} {t}" for c, t in columns)
        raise InvalidInput(f'destination table "{name}" already exists with another shape',
                           detail=f"A destination needs exactly the columns: {wanted} "
                                  "(and a column pipeline text to be shared by several pipelines).",
                           hint="Pass another destination, or drop that table.")


def _columns_of(db, oid):
    """(name, type) of every column of the table, in order."""
    return [(r["attname"], r["type"]) for r in db.query(
        "SELECT attname, pg_catalog.format_type(atttypid, atttypmod) AS type "
        "FROM pg_catalog.pg_attribute WHERE attrelid = %s::oid AND attnum > 0 "
        "AND NOT attisdropped ORDER BY attnum", oid)]


def check_reuse(db, oid, name, columns, owner_role, pipeline_name, key_facts):
    """An existing destination: of a pipeline's own, exactly our shape and no
    other pipeline writing to it; shared (a column `pipeline text`, see
    sql/ext/26_shared_destinations.sql), our columns in any order, the key
    type ours or text (for keys whose text form is exact), unique indexes
    that include `pipeline`, and a table whose owner the pipeline's owner
    acts for (attaching writes to another role's table is that role's call)."""
    found = dict(_columns_of(db, oid))
    if "pipeline" not in found:
        check_existing(db, oid, name, columns)
        _check_not_fed_by_another(db, oid, name, pipeline_name)
        return
    _check_shared_columns(name, found, columns, key_facts)
    _check_deterministic(db, oid, name)
    _check_shared_unique_indexes(db, oid, name)
    _check_may_attach(db, oid, name, owner_role)


def _check_not_fed_by_another(db, oid, name, pipeline_name):
    rows = db.query("SELECT name FROM aidb.pipeline_registry WHERE destination = %s::oid "
                    "ORDER BY id LIMIT 1", oid)
    if rows:
        other = rows[0]["name"]
        raise InvalidInput(f'destination table "{name}" is already fed by pipeline "{other}"',
                           detail="Two pipelines writing the same (source_key, part_id) rows "
                                  "would delete each other's rows.",
                           hint=f'To share it, give it a column naming the pipeline of each row: '
                                f"ALTER TABLE {name} ADD COLUMN pipeline text NOT NULL DEFAULT "
                                f"{_literal(other)}, and a primary key (pipeline, source_key, part_id) "
                                f"instead of (source_key, part_id); then create pipeline "
                                f'"{pipeline_name}" again. Or pass another destination.')


def _check_shared_columns(name, found, columns, key_facts):
    if found["pipeline"] != "text":
        raise InvalidInput(f'column pipeline of shared destination "{name}" is of type '
                           f'{found["pipeline"]}, not text',
                           hint="The column names the pipeline that wrote each row: make it text.")
    wanted = dict(columns)
    missing = [c for c in wanted if c not in found]
    extra = [c for c in found if c not in wanted and c != "pipeline"]
    if missing or extra:
        raise InvalidInput(f'shared destination "{name}" has another shape',
                           detail=f"Missing columns: {', '.join(missing) or 'none'}; "
                                  f"unexpected columns: {', '.join(extra) or 'none'}.",
                           hint="A shared destination has the columns pipeline text, "
                                + ", ".join(f"{c} {t}" for c, t in columns) + ".")
    for column, wanted_type in columns:
        if found[column] == wanted_type:
            continue
        if column == "source_key" and found[column] == "text":
            _check_key_as_text(name, key_facts)
            continue
        what = {"source_key": "this pipeline's keys are", "embedding": "its model gives vectors of"}
        raise InvalidInput(f'column {column} of shared destination "{name}" is of type '
                           f"{found[column]}, but {what.get(column, 'it must be')} {wanted_type}",
                           hint="Every pipeline writing to one table must fit its columns: the "
                                "same model dimensions; keys of one type (or a text source_key).")


# Key types whose text form is exact and independent of every setting: such
# keys may be kept as text in a shared destination.
KEYS_AS_TEXT = ("smallint", "integer", "bigint", "uuid", "text", "character varying")


def _check_key_as_text(name, key_facts):
    if key_facts["base_type"] not in KEYS_AS_TEXT or not key_facts["deterministic"]:
        raise InvalidInput(f'keys of type {key_facts["key_type"]} cannot be kept as text in '
                           f'shared destination "{name}"',
                           detail="Keys are kept as text only where their text form is exact and "
                                  "the same whatever the settings: integers, uuid, and text or "
                                  "varchar with a deterministic collation.",
                           hint=f"Use a destination whose source_key is {key_facts['key_type']}.")


def _check_deterministic(db, oid, name):
    """pipeline and a text source_key compare bytewise: with a collation
    that does not, 'a' and 'A' would be one pipeline (or key)."""
    rows = db.query("SELECT a.attname FROM pg_catalog.pg_attribute a "
                    "JOIN pg_catalog.pg_collation c ON c.oid = a.attcollation "
                    "WHERE a.attrelid = %s::oid AND a.attname IN ('pipeline', 'source_key') "
                    "AND NOT a.attisdropped AND NOT c.collisdeterministic", oid)
    if rows:
        raise InvalidInput(f'column {rows[0]["attname"]} of shared destination "{name}" has a '
                           "nondeterministic collation",
                           hint="Use a deterministic collation (the default is one).")


def _check_shared_unique_indexes(db, oid, name):
    rows = db.query("""
        SELECT i.indexrelid::pg_catalog.regclass::text AS index
        FROM pg_catalog.pg_index i
        WHERE i.indrelid = %s::oid AND i.indisunique
          AND NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = i.indrelid AND a.attname = 'pipeline'
                            AND a.attnum = ANY (i.indkey))""", oid)
    if rows:
        raise InvalidInput(f'unique index {rows[0]["index"]} of shared destination "{name}" '
                           "does not include column pipeline",
                           detail="Two pipelines may write rows with the same source_key and part_id.",
                           hint="Make the key (pipeline, source_key, part_id).")


def _check_may_attach(db, oid, name, owner_role):
    row = db.query("SELECT pg_catalog.pg_has_role(%s::pg_catalog.regrole, c.relowner, 'MEMBER') AS ok, "
                   "c.relowner::pg_catalog.regrole::text AS owner FROM pg_catalog.pg_class c "
                   "WHERE c.oid = %s::oid", owner_role, oid)[0]
    if not row["ok"]:
        raise AidbError(f'permission denied to attach a pipeline of role {owner_role} to shared '
                        f'destination "{name}", which belongs to role {row["owner"]}',
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        hint="Only the table's owner (or a member of its role) may attach "
                             "pipelines to it.")


def _literal(text):
    return "'" + text.replace("'", "''") + "'"


def key_facts(db, key_type, source_oid, key_column):
    """The key's base type and whether its collation is deterministic."""
    row = db.query("""
        SELECT pg_catalog.format_type((aidb._key_type_facts(%s::pg_catalog.regtype)).base_type, NULL) AS base,
               coalesce((SELECT c.collisdeterministic FROM pg_catalog.pg_collation c
                         JOIN pg_catalog.pg_attribute a ON a.attcollation = c.oid
                         WHERE a.attrelid = %s::oid AND a.attname = %s), true) AS deterministic""",
                   key_type, source_oid, key_column)[0]
    return {"key_type": key_type, "base_type": row["base"], "deterministic": row["deterministic"]}


def is_shared(db, pipeline):
    """Whether the pipeline's destination is shared (has a column pipeline)."""
    return pipeline.destination is not None and db.query(
        "SELECT aidb._destination_is_shared(%s::pg_catalog.regclass) AS shared",
        pipeline.destination)[0]["shared"]


def remove_rows_of(db, pipeline):
    """A shared destination's rows of this pipeline, deleted through the
    owner's write function (the table's triggers are the owner's code, never
    run with the rights of whoever deletes the pipeline)."""
    problem = db.query("SELECT aidb._owner_function_problem(%s::int, %s::pg_catalog.regrole) AS p",
                       pipeline.id, pipeline.owner_role)[0]["p"]
    if problem:
        raise AidbError(f'pipeline "{pipeline.name}": its rows in shared destination '
                        f"{pipeline.destination} are not removed: its function {problem}",
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        hint=f"A superuser can rebuild the functions with "
                             f"SELECT aidb._install_pipeline_objects({pipeline.id});")
    if not db.query("SELECT pg_catalog.to_regproc(%s) IS NOT NULL AS ok",
                    f"aidb._destination_{pipeline.id}")[0]["ok"]:
        db.notice(f'pipeline "{pipeline.name}": its write function is gone; its rows in '
                  f"{pipeline.destination} stay (DELETE ... WHERE pipeline = '{pipeline.name}')")
        return
    db.execute(sql("SELECT {destination}(NULL, '{}', '{}', '{}', '{}')",
                   destination=pipeline.owner_function("destination")))


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
