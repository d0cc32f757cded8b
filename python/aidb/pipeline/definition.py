"""A pipeline as registered, with every identifier resolved from the catalogs
and quoted, ready for the SQL builders."""

import json
from dataclasses import dataclass

from ..errors import AidbError, InvalidInput, UNDEFINED_OBJECT
from ..sqltext import ident, quoted, sql


def quote_ident(name):
    """SQL identifier quoting, always (names with capitals, spaces, quotes)."""
    return ident(name).text


@dataclass
class Pipeline:
    id: int
    name: str
    source_type: str            # 'table', 'view' or 'volume'
    source: str | None          # schema-qualified, quoted (tables and views)
    volume: str | None          # the volume's name (volumes)
    key_column: str | None      # quoted (tables and views)
    data_column: str | None     # quoted (tables and views)
    key_type: str | None        # the key's base type, schema-qualified and quoted
    key_equals: str | None      # its equality operator, as OPERATOR(schema.=)
    source_filter: str | None
    destination: str            # schema-qualified, quoted
    steps: list
    auto_processing: str
    batch_size: int
    owner_role: str

    @property
    def backlog(self):
        return ident("aidb", f"_backlog_{self.id}")

    @property
    def state(self):
        return ident("aidb", f"_state_{self.id}")

    def owner_function(self, kind):
        """aidb._<kind>_<id>: one of the SECURITY DEFINER functions, owned by the
        pipeline owner, through which the engine touches the owner's objects
        (sql/ext/25_pipeline_objects.sql)."""
        return ident("aidb", f"_{kind}_{self.id}")

    @property
    def source_name(self):
        return quoted(self.source)

    @property
    def destination_name(self):
        return quoted(self.destination)

    @property
    def key_type_name(self):
        return quoted(self.key_type)

    @property
    def equals(self):
        return quoted(self.key_equals)


_LOAD = """
SELECT p.id, p.name, p.source_type, p.source_filter, p.steps::text AS steps,
       p.auto_processing, p.batch_size, p.owner_role::text AS owner_role,
       p.source_key_column, p.source_data_column, p.source_volume,
       CASE WHEN s.oid IS NOT NULL THEN pg_catalog.format('%%I.%%I', sn.nspname, s.relname) END AS source,
       CASE WHEN d.oid IS NOT NULL THEN pg_catalog.format('%%I.%%I', dn.nspname, d.relname) END AS destination,
       k.key_type, k.equals AS key_equals
FROM aidb.pipeline_registry p
CROSS JOIN LATERAL aidb._pipeline_key(p, strict => false) k
LEFT JOIN pg_catalog.pg_class s ON s.oid = p.source
LEFT JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace
LEFT JOIN pg_catalog.pg_class d ON d.oid = p.destination      -- NULL once dropped:
LEFT JOIN pg_catalog.pg_namespace dn ON dn.oid = d.relnamespace  -- delete_pipeline still works
WHERE {condition}
"""


def _from_row(row):
    return Pipeline(
        id=row["id"], name=row["name"], source_type=row["source_type"],
        source=row["source"] if row["source_type"] != "volume" else None,
        volume=row["source_volume"],
        key_column=_quoted_or_none(row["source_key_column"]),
        data_column=_quoted_or_none(row["source_data_column"]),
        key_type=row["key_type"], key_equals=row["key_equals"],
        source_filter=row["source_filter"],
        destination=row["destination"], steps=json.loads(row["steps"]),
        auto_processing=row["auto_processing"], batch_size=row["batch_size"],
        owner_role=row["owner_role"])


def _quoted_or_none(name):
    return quote_ident(name) if name is not None else None


def load_pipeline(db, name):
    """The pipeline called `name`; a clear error if there is none."""
    if name is None:
        raise InvalidInput("the pipeline name must not be NULL",
                           hint="Pass the name of a pipeline (SELECT name FROM aidb.pipelines).")
    rows = db.query(sql(_LOAD, condition=sql("p.name = %s")), name)
    if not rows:
        raise AidbError(f'pipeline "{name}" does not exist', sqlstate=UNDEFINED_OBJECT,
                        hint="See SELECT name FROM aidb.pipelines.")
    return _from_row(rows[0])


def load_pipeline_by_id(db, pipeline_id):
    rows = db.query(sql(_LOAD, condition=sql("p.id = %s")), pipeline_id)
    return _from_row(rows[0]) if rows else None
