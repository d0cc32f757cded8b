"""Generated pipeline sources for the property-based tests (tests/test_properties.py):
hypothesis strategies for key types and their values, odd identifiers and
source shapes; building such a source in a database; and an independent
recomputation of what a ChunkText-only pipeline's destination must hold.

The recomputation never asks the engine: it reads the source rows (through
the pipeline's filter, in SQL), splits the data with the ChunkText code the
pipeline names, and compares keys by their canonical form under the key
type's own equality (numeric 1.10 = 1.1, float8 -0 = 0 and NaN = NaN,
citext 'A' = 'a'), which is how PostgreSQL's unique index sees them.
"""
from __future__ import annotations

import decimal
import math
import uuid
from dataclasses import dataclass, field

from hypothesis import strategies as st
from psycopg import sql

from aidb.pipeline.steps.chunk_text import ChunkText

# --- values ----------------------------------------------------------------------------------

# Characters that broke, or could break, SQL built as text: quotes, percent
# signs, braces, dollar signs, backslashes, unicode, spaces.
ODD_CHARACTERS = "'\"%{}$1\\ sé€中😀\t\n;-:()[]"
_TEXT_CHARACTERS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")


def odd_text(min_size=0, max_size=12):
    """Short strings, mostly of odd characters."""
    return st.text(st.one_of(st.sampled_from(ODD_CHARACTERS), _TEXT_CHARACTERS),
                   min_size=min_size, max_size=max_size)


def long_text():
    """A few KB: over a btree page's third, under the backlog's limits."""
    return st.builds(lambda seed, n: (seed or "x") * (n // max(1, len(seed or "x")) + 1),
                     odd_text(1, 4), st.integers(1000, 3000)).map(lambda s: s[:3000])


_FIXED_TEXT_KEYS = ["a", "A", "b", "", " ", "%s", "%%", "{}", "{x}", "$1", "'", "''", '"',
                    "\\", "é", "e\u0301", "😀", "null", "NULL"]

_DECIMAL_KEYS = [decimal.Decimal(v) for v in
                 ("0", "-0", "1", "1.0", "1.10", "1.1", "-1", "0.000001", "1e20", "12345678901234567890.5",
                  "NaN", "Infinity", "-Infinity")]
_FLOAT_KEYS = [0.0, -0.0, 1.0, 0.1, 1 / 3, -2.5, 1e-300, 5e-324, 1.7976931348623157e308,
               math.inf, -math.inf, math.nan]


@dataclass(frozen=True)
class KeyType:
    """How a key column is declared, what values it takes, and when two of
    them are the same key."""
    name: str
    declaration: str                 # SQL, with {domain} / {collation} slots filled by setup
    values: st.SearchStrategy
    canonical: callable = lambda v: v
    setup: tuple = ()                # statements run once per database


def _canonical_decimal(value):
    if value.is_nan():
        return "NaN"
    if value.is_infinite():
        return str(value)
    return value.normalize() if value != 0 else decimal.Decimal(0)


def _canonical_float(value):
    if math.isnan(value):
        return "NaN"
    return 0.0 if value == 0 else value


def _ints(low, high):
    return st.one_of(st.integers(-3, 3), st.sampled_from([low, high, low + 1, high - 1]),
                     st.integers(low, high))


def _texts():
    return st.one_of(st.sampled_from(_FIXED_TEXT_KEYS), odd_text(0, 12), long_text())


KEY_TYPES = {
    "int2": KeyType("int2", "smallint", _ints(-32768, 32767)),
    "int4": KeyType("int4", "integer", _ints(-2**31, 2**31 - 1)),
    "int8": KeyType("int8", "bigint", _ints(-2**63, 2**63 - 1)),
    "numeric": KeyType("numeric", "numeric", st.one_of(
        st.sampled_from(_DECIMAL_KEYS),
        st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10**6,
                    max_value=10**6)), _canonical_decimal),
    "float8": KeyType("float8", "double precision", st.one_of(
        st.sampled_from(_FLOAT_KEYS), st.floats(allow_nan=False, allow_infinity=False)),
        _canonical_float),
    "text": KeyType("text", "text", _texts()),
    "varchar_c": KeyType("varchar_c", 'varchar COLLATE "C"', _texts()),
    "varchar_icu": KeyType("varchar_icu", 'varchar(4000) COLLATE "und-x-icu"', _texts()),
    # A nondeterministic collation: 'A' and 'a' are one key (ASCII only, as for citext).
    "varchar_ci": KeyType("varchar_ci", 'varchar COLLATE public."ci %s"', st.one_of(
        st.sampled_from(["a", "A", "ab", "aB", "Ab", "%S", "%s", "{X}", "{x}", "$1", "'Q'", "'q'"]),
        st.text(st.sampled_from("aAbBzZ%{}$1' "), max_size=6)), lambda v: v.lower(),
        setup=("""DO $$ BEGIN CREATE COLLATION public."ci %s" (provider = icu,
                  locale = 'und-u-ks-level2', deterministic = false);
                  EXCEPTION WHEN duplicate_object THEN NULL; END $$""",)),
    "uuid": KeyType("uuid", "uuid", st.one_of(
        st.sampled_from([uuid.UUID(int=0), uuid.UUID(int=1), uuid.UUID(int=2**128 - 1)]), st.uuids())),
    # A domain over text whose name needs quoting, with its own CHECK.
    "domain": KeyType("domain", '"public"."key %s {x}"', _texts().filter(lambda v: v != "forbidden"),
                      setup=("""DO $$ BEGIN CREATE DOMAIN public."key %s {x}" AS text
                                CHECK (VALUE <> 'forbidden'); EXCEPTION WHEN duplicate_object
                                THEN NULL; END $$""",)),
    # citext compares lower(); ASCII only, so that lower() here and there agree.
    "citext": KeyType("citext", "public.citext", st.one_of(
        st.sampled_from(["a", "A", "ab", "aB", "Ab", "%S", "%s", "{X}", "{x}", "$1", "'Q'", "'q'"]),
        st.text(st.sampled_from("aAbBzZ%{}$1' "), max_size=6)), lambda v: v.lower(),
        setup=("CREATE EXTENSION IF NOT EXISTS citext SCHEMA public",)),
}


def data_values():
    """What the data column holds: NULL, empty, words, odd characters, a few KB."""
    words = st.lists(st.sampled_from(["alpha", "beta", "gamma", "δέλτα", "%s", "{x}", "$1",
                                      "it's", "a\nb", "end."]), max_size=12).map(" ".join)
    return st.one_of(st.none(), st.just(""), words, odd_text(0, 40), long_text())


# --- identifiers -----------------------------------------------------------------------------

_FIXED_NAMES = ["pct%s", "sale%", "id{x}", "$1", "%%", "it's", 'say "hi"', "with space",
                "Ünïcødé", "中文", "😀", "x" * 63, "é" * 31 + "x", "{}", "%I", "a.b", "key",
                "data", "s", "d", "hash", "KEY", "select", "1"]
_SYSTEM_COLUMNS = {"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"}


def _fits(name):
    return 0 < len(name.encode()) <= 63


identifiers = st.one_of(st.sampled_from(_FIXED_NAMES), odd_text(1, 20)).filter(_fits)


def _column_name(name):
    return name.lower() not in _SYSTEM_COLUMNS


def _schema_name(name):
    return not name.lower().startswith("pg_")


# --- sources ---------------------------------------------------------------------------------

SOURCE_KINDS = ("table", "partitioned", "view")


@dataclass
class Source:
    schema: str
    table: str                       # where DML goes (the base table of a view)
    kind: str                        # table, partitioned, view
    relation: str                    # what the pipeline reads (the view, or the table)
    key: str
    data: str
    flag: str                        # a boolean column the filter may read
    note: str                        # an unrelated column (renamed by migrations)
    key_type: KeyType
    with_filter: bool
    added: list = field(default_factory=list)
    base_names: dict = field(default_factory=dict)   # a view's columns renamed: the table's names

    def column(self, what):
        """The base table's name for the key, data or flag column."""
        return self.base_names.get(what, getattr(self, what))

    def ident(self, name):
        return sql.Identifier(self.schema, name)

    @property
    def base(self):
        return self.ident(self.table)

    @property
    def read_from(self):
        return self.ident(self.relation)

    @property
    def qualified(self):
        """The source as create_pipeline takes it (quoted, schema-qualified)."""
        return ".".join('"' + part.replace('"', '""') + '"' for part in (self.schema, self.relation))

    @property
    def filter(self):
        """The pipeline's source_filter (NULL-safe; reads an odd column name)."""
        if not self.with_filter:
            return None
        return '"' + self.flag.replace('"', '""') + '" IS NOT FALSE'

    def canonical(self, key):
        return self.key_type.canonical(key)


@st.composite
def sources(draw, kinds=SOURCE_KINDS, key_types=tuple(KEY_TYPES)):
    """A Source description (not yet created): odd names, a key type, a kind."""
    columns = draw(st.lists(identifiers.filter(_column_name), min_size=4, max_size=4,
                            unique_by=lambda n: n))
    schema = draw(identifiers.filter(_schema_name))
    table = draw(identifiers)
    kind = draw(st.sampled_from(kinds))
    relation = table
    if kind == "view":
        relation = draw(identifiers.filter(lambda n: n != table))
    return Source(schema=schema, table=table, kind=kind, relation=relation, key=columns[0],
                  data=columns[1], flag=columns[2], note=columns[3],
                  key_type=KEY_TYPES[draw(st.sampled_from(key_types))],
                  with_filter=draw(st.booleans()))


def create_source(conn, source):
    """The schema, table (partitioned: by hash of the key, two partitions) and view."""
    for statement in source.key_type.setup:
        conn.execute(statement)
    conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(source.schema)))
    columns = sql.SQL("{key} {type} UNIQUE, {data} text, {flag} boolean, {note} text").format(
        key=sql.Identifier(source.key), type=sql.SQL(source.key_type.declaration),
        data=sql.Identifier(source.data), flag=sql.Identifier(source.flag),
        note=sql.Identifier(source.note))
    if source.kind == "partitioned":
        conn.execute(sql.SQL("CREATE TABLE {} ({}) PARTITION BY HASH ({})").format(
            source.base, columns, sql.Identifier(source.key)))
        for remainder in range(2):
            conn.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} "
                                 "FOR VALUES WITH (MODULUS 2, REMAINDER {})").format(
                source.ident(f"part {remainder} of %s"), source.base, sql.Literal(remainder)))
    else:
        conn.execute(sql.SQL("CREATE TABLE {} ({})").format(source.base, columns))
    if source.kind == "view":
        conn.execute(sql.SQL("CREATE VIEW {} AS SELECT {}, {}, {} FROM {}").format(
            source.read_from, sql.Identifier(source.key), sql.Identifier(source.data),
            sql.Identifier(source.flag), source.base))


def create_chunk_pipeline(conn, name, source, chunk_length, strategy="chars"):
    """A ChunkText-only pipeline (no model) over `source`, Disabled."""
    conn.execute("SELECT aidb.create_pipeline(name => %s, source => %s, source_key_column => %s, "
                 "source_data_column => %s, source_filter => %s, step_1 => 'ChunkText', "
                 "step_1_options => aidb.chunk_text_config(%s, strategy => %s))",
                 (name, source.qualified, source.key, source.data, source.filter, chunk_length,
                  strategy))


# --- the recomputation -----------------------------------------------------------------------

def pipeline_facts(conn, name):
    return conn.execute("SELECT steps, destination FROM aidb.pipelines WHERE name = %s",
                        (name,)).fetchone()


def expected_rows(conn, name, source):
    """{(canonical key, part id): value} the destination must hold now."""
    steps, _ = pipeline_facts(conn, name)
    condition = sql.SQL(source.filter) if source.filter else sql.SQL("true")
    rows = conn.execute(sql.SQL("SELECT {key}, {data} FROM {source} "
                                "WHERE {key} IS NOT NULL AND {data} IS NOT NULL AND ({condition})")
                        .format(key=sql.Identifier(source.key), data=sql.Identifier(source.data),
                                source=source.read_from, condition=condition)).fetchall()
    expected = {}
    for key, text in rows:
        texts = [text]
        for step in steps:
            texts = [piece for t in texts for piece in ChunkText(step["options"]).run(t)]
        for part_id, part in enumerate(texts):
            expected[(source.canonical(key), part_id)] = part
    return expected


def actual_rows(conn, name, source):
    """{(canonical key, part id): value} as the destination holds them; a
    duplicate (two keys the same under the key's equality) fails."""
    _, destination = pipeline_facts(conn, name)
    actual = {}
    for key, part_id, value in conn.execute(sql.SQL("SELECT source_key, part_id, value FROM {}")
                                            .format(sql.SQL(destination))):
        slot = (source.canonical(key), part_id)
        assert slot not in actual, f"two destination rows for {slot}"
        actual[slot] = value
    return actual


def assert_destination_matches(conn, name, source, context=""):
    expected = expected_rows(conn, name, source)
    actual = actual_rows(conn, name, source)
    missing = sorted(map(repr, expected.keys() - actual.keys()))
    extra = sorted(map(repr, actual.keys() - expected.keys()))
    assert not missing and not extra, \
        f"{context}: destination differs: missing {missing[:5]}, extra {extra[:5]}"
    wrong = [slot for slot in expected if expected[slot] != actual[slot]]
    assert not wrong, f"{context}: wrong values for {wrong[:5]}"
    return len(expected)
