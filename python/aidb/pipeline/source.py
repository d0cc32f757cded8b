"""Checks on a pipeline's source: what it is, its key and data columns, and
whether the pipeline's owner may read it."""

from dataclasses import dataclass

from ..errors import AidbError, InvalidInput, INSUFFICIENT_PRIVILEGE, PIPELINE_PERMANENT, \
    UNDEFINED_OBJECT

# relkind -> our source kind. Materialized views cannot carry triggers, so
# they are reconciled by content hash like views.
SOURCE_KINDS = {"r": "table", "p": "table", "v": "view", "m": "view", "f": "view"}
OTHER_KINDS = {"i": "an index", "I": "an index", "S": "a sequence", "c": "a composite type",
               "t": "a TOAST table"}


@dataclass
class Source:
    oid: int
    name: str            # as the user wrote it, for messages
    kind: str
    schema: str
    qualified: str       # schema-qualified and quoted
    key_column: str
    data_column: str


def resolve_source(db, name, key_column, data_column, owner_role):
    """A checked Source; every failure names the object and what to do."""
    rows = _lookup(db, name)
    if not rows:
        raise AidbError(f'source "{name}" does not exist', sqlstate=UNDEFINED_OBJECT,
                        hint="Name a table or view (schema-qualified if it is not on the search_path).")
    row = rows[0]
    if row["relkind"] not in SOURCE_KINDS:
        what = OTHER_KINDS.get(row["relkind"], "another kind of relation")
        raise InvalidInput(f'source "{name}" is {what}, not a table or view')
    _check_whole_and_lasting(name, row)
    _check_privileges(db, name, row, owner_role)
    if key_column == "":
        raise InvalidInput(f'source_key_column of source "{name}" is an empty name',
                           hint="Name the key column, or pass NULL (or leave it out) to use the "
                                "source's single-column primary key.")
    if key_column is None:
        key_column = _primary_key_column(db, name, row["oid"])
    for column, what in ((key_column, "key"), (data_column, "data")):
        _check_column(db, name, row["oid"], column, what)
    _check_data_type(db, name, row["oid"], data_column)
    source = Source(row["oid"], name, SOURCE_KINDS[row["relkind"]], row["nspname"],
                    row["qualified"], key_column, data_column)
    _check_key_unique(db, source)
    return source


_LOOKUP = ("SELECT c.oid::int AS oid, c.relkind::text AS relkind, n.nspname, "
           "format('%%I.%%I', n.nspname, c.relname) AS qualified, c.relpersistence::text AS persistence, "
           "(SELECT a.relid::text FROM pg_catalog.pg_partition_root(c.oid) a(relid) "
           " WHERE c.relispartition) AS partition_root "
           "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
           "WHERE ")


def _lookup(db, name):
    """The source's catalog row (none if it does not exist). A qualified name
    is looked up in the catalogs, so that a schema the caller may not use
    gets our error below rather than to_regclass's; a bare one on the
    search_path."""
    try:
        parts = db.query("SELECT pg_catalog.parse_ident(%s) AS p", name)[0]["p"]
    except Exception:  # noqa: BLE001 — parse_ident's own error is cryptic
        parts = None
    if parts is None or len(parts) > 2:
        raise InvalidInput(f'invalid source name "{name}"',
                           hint='Use table or schema.table; quote unusual names ("My Table").')
    if len(parts) == 2:
        return db.query(_LOOKUP + "n.nspname = %s AND c.relname = %s", *parts)
    return db.resolve_with_caller_path(
        _LOOKUP + "c.oid = pg_catalog.to_regclass(pg_catalog.quote_ident(%s))", parts[0])


def _check_whole_and_lasting(name, row):
    """A partition is refused (writes through its root would bypass its
    statement triggers: the root is the source to name; it captures every
    partition), and so is a temporary table (gone with its session)."""
    if row["partition_root"] is not None:
        raise InvalidInput(f'source "{name}" is a partition of {row["partition_root"]}',
                           hint=f"Create the pipeline on the partitioned table "
                                f"{row['partition_root']}: it captures writes to every partition.")
    if row["persistence"] == "t":
        raise InvalidInput(f'source "{name}" is a temporary table',
                           hint="A pipeline outlives the session; use a permanent table.")


def _check_privileges(db, name, row, owner_role):
    if not db.query("SELECT pg_catalog.has_schema_privilege(%s, %s, 'USAGE') AS ok",
                    owner_role, row["nspname"])[0]["ok"]:
        raise AidbError(f'permission denied: role {owner_role} lacks USAGE on schema '
                        f'"{row["nspname"]}" of source "{name}"', sqlstate=INSUFFICIENT_PRIVILEGE,
                        hint="The pipeline reads the source as its owner.")
    needed = ["SELECT"] + (["TRIGGER"] if SOURCE_KINDS[row["relkind"]] == "table" else [])
    for privilege in needed:
        if not db.query("SELECT pg_catalog.has_table_privilege(%s, %s::oid, %s) AS ok",
                        owner_role, row["oid"], privilege)[0]["ok"]:
            raise AidbError(f'permission denied: role {owner_role} lacks {privilege} on source "{name}"',
                            sqlstate=INSUFFICIENT_PRIVILEGE,
                            hint="The pipeline reads the source as its owner"
                                 + (" and captures changes with triggers." if privilege == "TRIGGER"
                                    else "."))


def _primary_key_column(db, name, oid):
    rows = db.query("SELECT a.attname FROM pg_catalog.pg_index i "
                    "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] "
                    "WHERE i.indrelid = %s::oid AND i.indisprimary AND i.indnatts = 1", oid)
    if not rows:
        raise InvalidInput(f'source "{name}" has no single-column primary key',
                           hint="Pass source_key_column => a column whose values are unique.")
    return rows[0]["attname"]


def _check_column(db, name, oid, column, what):
    if column is None:
        raise InvalidInput(f"source_{what}_column is required for source \"{name}\"",
                           hint=f"Name the column that holds the {what} of each row.")
    if not db.query("SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = %s::oid "
                    "AND attname = %s AND attnum > 0 AND NOT attisdropped", oid, column):
        raise AidbError(f'column "{column}" does not exist in source "{name}"',
                        sqlstate="42703", hint=f"source_{what}_column must name a column of it.")


def _check_data_type(db, name, oid, column):
    """The data must be text-like: string types, json, jsonb, xml, or domains over them."""
    row = db.query("""
        SELECT pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
               coalesce(nullif(t.typbasetype, 0), t.oid) AS base
        FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
        WHERE a.attrelid = %s::oid AND a.attname = %s""", oid, column)[0]
    ok = db.query("SELECT typcategory = 'S' OR typname IN ('json', 'jsonb', 'xml') AS ok "
                  "FROM pg_catalog.pg_type WHERE oid = %s::oid", row["base"])[0]["ok"]
    if not ok:
        raise InvalidInput(f'data column "{column}" of source "{name}" has type {row["type"]}, '
                           "which is not text",
                           hint="Use a text, varchar, json or jsonb column, or a view that "
                                "casts the column to text.")


def _check_key_unique(db, source):
    """Tables: a unique index on exactly the key column. Views: checked later."""
    if source.kind == "table":
        unique = db.query("""
            SELECT 1 FROM pg_catalog.pg_index i
            JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = %s::oid AND i.indisunique AND i.indnatts = 1
              AND i.indpred IS NULL AND a.attname = %s""", source.oid, source.key_column)
    else:
        # A view is the owner's SQL: it is read through the owner's function
        # once that exists (guard.check_source_as_owner), never as the caller.
        return
    if not unique:
        raise InvalidInput(f'key column "{source.key_column}" of source "{source.name}" is not unique',
                           hint="Tables need a primary key or unique index on exactly that column.")


_OWNER_CAN_READ = """
SELECT pg_catalog.has_schema_privilege(p.owner_role, c.relnamespace, 'USAGE')
       AND pg_catalog.has_column_privilege(p.owner_role, p.source, p.source_key_column, 'SELECT')
       AND pg_catalog.has_column_privilege(p.owner_role, p.source, p.source_data_column, 'SELECT')
       AS ok
FROM aidb.pipeline_registry p JOIN pg_catalog.pg_class c ON c.oid = p.source
WHERE p.id = %s"""


def check_owner_can_read(db, pipeline):
    """Before a run reads the source: the pipeline's owner may still read its
    key and data columns. A pipeline never reads what its owner cannot; when
    the owner lost the right, the pipeline blocks (PipelinePermanent) with an
    error that says how to unblock it, rather than failing on every batch
    with PostgreSQL's bare "permission denied"."""
    rows = db.query(_OWNER_CAN_READ, pipeline.id)
    if rows and not rows[0]["ok"]:
        raise AidbError(f'pipeline "{pipeline.name}" cannot read its source {pipeline.source}: '
                        f"role {pipeline.owner_role} lacks SELECT on it",
                        sqlstate=INSUFFICIENT_PRIVILEGE, category=PIPELINE_PERMANENT,
                        hint=f"Grant SELECT on the source (and USAGE on its schema) back to role "
                             f"{pipeline.owner_role}.")


def check_runs_as_owner(db, pipeline):
    """Live processing runs inside the capture trigger, whose function
    belongs to the pipeline's owner; refused for anyone calling it directly
    as another role, since the source_filter must never run with another
    role's rights (docs/architecture.md, "Security model")."""
    if not db.query("SELECT pg_catalog.quote_ident(current_user)::regrole = %s::regrole AS ok",
                    pipeline.owner_role)[0]["ok"]:
        raise AidbError(f'permission denied to process pipeline "{pipeline.name}" live: '
                        f"only its capture trigger does, as role {pipeline.owner_role}",
                        sqlstate=INSUFFICIENT_PRIVILEGE)
