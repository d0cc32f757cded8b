"""Property-based tests: pipelines over sources of generated shapes stay exactly
consistent with their source through random DML, migrations and crashes.

Each example builds a source with odd names (quotes, %, {}, $1, unicode,
63 bytes) for its schema, table and columns, a key of a generated type
(int2/4/8, numeric, float8, text, varchar with a collation, uuid, a domain,
citext) as a plain table, a hash-partitioned table (the root) or a view, and
a ChunkText-only pipeline (no model, so it is fast) with or without a
source_filter. It then applies a generated sequence of statements — inserts
of single and several rows (NULL keys, duplicates, very long and odd keys),
data updates, key changes, deletes, TRUNCATE, ADD COLUMN, RENAME of an
unrelated column, run_pipeline, and run_pipeline terminated mid-batch — and
after every run checks that the backlog is drained, nothing was recorded as
an error, and the destination holds exactly what an independent
recomputation from the source rows says (tests/support/generated_sources.py).

The application's statements may fail only the way they would without aidb
(a duplicate key, a key too large for the source's own index, the domain's
CHECK); any other error is a failure.

Size: AIDB_PROPERTY_EXAMPLES examples per test (default: what fits in CI,
about a minute for the module on two cores); e.g. AIDB_PROPERTY_EXAMPLES=500
for a longer search.
"""

import decimal
import os
import threading

import psycopg
import pytest
from hypothesis import HealthCheck, event as hypothesis_event, given, note as hypothesis_note, settings, \
    strategies as st
from hypothesis.control import currently_in_test_context
from psycopg import sql

from tests.support.common import wait_for
from tests.support.generated_sources import (
    KEY_TYPES, SOURCE_KINDS, Source, assert_destination_matches, create_chunk_pipeline,
    create_source, data_values, identifiers, sources)

pytestmark = pytest.mark.slow      # many generated scenarios, each on its own tables

EXAMPLES = int(os.environ.get("AIDB_PROPERTY_EXAMPLES", "0")) or None

settings.register_profile("aidb-ci", max_examples=25, deadline=None, derandomize=False,
                          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                 HealthCheck.too_slow,
                                                 HealthCheck.data_too_large])


def examples(ci):
    """Examples for one test: `ci` by default, AIDB_PROPERTY_EXAMPLES on demand."""
    return settings(settings.get_profile("aidb-ci"), max_examples=EXAMPLES or ci)


# SQLSTATEs an application statement may end with, with or without aidb.
APPLICATION_ERRORS = {
    "23505",    # unique_violation: a duplicate key
    "54000",    # program_limit_exceeded: a key too large for the source's own index
    "23514",    # check_violation: the domain's CHECK
    "42701",    # duplicate_column: a migration's new name is taken
    "42P07",    # duplicate_table
    "42P06",    # duplicate_schema
}


def note(message):
    """A line of the falsifying example's story (outside hypothesis: nothing)."""
    if currently_in_test_context():
        hypothesis_note(message)


def event(name):
    """Counted in --hypothesis-show-statistics: what the examples reached."""
    if currently_in_test_context():
        hypothesis_event(name)


# --- the operations --------------------------------------------------------------------------

def operations(pool_size):
    """A list of operations on keys drawn from a pool of `pool_size` values."""
    key = st.integers(0, pool_size - 1)
    key_or_null = st.one_of(key, st.none())
    flag = st.sampled_from([True, False, None])
    op = st.one_of(
        st.tuples(st.just("insert"), st.lists(st.tuples(key_or_null, data_values(), flag),
                                               min_size=1, max_size=5)),
        st.tuples(st.just("update_data"), key, data_values()),
        st.tuples(st.just("update_all"), st.sampled_from(["append", "same", "flag"])),
        st.tuples(st.just("update_key"), key_or_null, key_or_null),
        st.tuples(st.just("delete"), key_or_null),
        st.tuples(st.just("truncate")),
        st.tuples(st.just("add_column"), identifiers),
        st.tuples(st.just("rename_note"), identifiers),
        st.tuples(st.just("rename"), st.sampled_from(["key", "data", "flag", "relation", "schema"]),
                  identifiers),
        st.tuples(st.just("run")),
        st.tuples(st.just("crash_run")),
        st.tuples(st.just("run_beside_open_delete"), key, data_values()),
        st.tuples(st.just("mode"), st.sampled_from(["Live", "Disabled"])),
    )
    return st.lists(op, min_size=1, max_size=14)


class Scenario:
    """One generated source and pipeline, and the statements applied to it."""

    def __init__(self, conn, connect, source, pool, name):
        self.conn, self.connect, self.source, self.pool, self.name = conn, connect, source, pool, name
        self.runs = 0
        self.live = False

    def key(self, index):
        return None if index is None else self.pool[index]

    def application(self, statement):
        """An application's statement on the source (its own transaction).
        Values are literals: psycopg would take a %s inside a quoted
        identifier for a parameter."""
        try:
            with self.conn.transaction():
                self.conn.execute(statement)
            return True
        except psycopg.Error as exc:
            event(f"application error {exc.sqlstate}")
            if exc.sqlstate not in APPLICATION_ERRORS:
                raise AssertionError(f"the application's statement failed: {exc.sqlstate} {exc}\n"
                                     f"{statement.as_string(self.conn)}") from exc
            return False

    def apply(self, operation):
        self.dispatch(operation)
        if self.live and self.source.kind != "view" and operation[0] not in ("run", "crash_run", "mode", "run_beside_open_delete"):
            # Live: the statement's own transaction brought the destination in step.
            self.check(f"Live, after {operation[0]}")

    def dispatch(self, operation):
        s = self.source
        kind = operation[0]
        note(f"{kind} {operation[1:]!r}"[:300])
        if kind == "insert":
            rows = sql.SQL(", ").join(
                sql.SQL("({}, {}, {})").format(*map(sql.Literal, (self.key(index), data, flag)))
                for index, data, flag in operation[1])
            self.application(sql.SQL("INSERT INTO {} ({}, {}, {}) VALUES ").format(
                s.base, *map(sql.Identifier, (s.column("key"), s.column("data"), s.column("flag")))) + rows)
        elif kind == "update_data":
            self.application(sql.SQL("UPDATE {} SET {} = {} WHERE {} = {}").format(
                s.base, sql.Identifier(s.column("data")), sql.Literal(operation[2]), sql.Identifier(s.column("key")),
                sql.Literal(self.key(operation[1]))))
        elif kind == "update_all":
            change = {"append": sql.SQL("{d} = {d} || ' more'"), "same": sql.SQL("{d} = {d}"),
                      "flag": sql.SQL("{f} = NOT {f}")}[operation[1]].format(
                d=sql.Identifier(s.column("data")), f=sql.Identifier(s.column("flag")))
            self.application(sql.SQL("UPDATE {} SET ").format(s.base) + change)
        elif kind == "update_key":
            self.application(sql.SQL("UPDATE {} SET {} = {} WHERE {} IS NOT DISTINCT FROM {}").format(
                s.base, sql.Identifier(s.column("key")), sql.Literal(self.key(operation[2])),
                sql.Identifier(s.column("key")), sql.Literal(self.key(operation[1]))))
        elif kind == "delete":
            self.application(sql.SQL("DELETE FROM {} WHERE {} IS NOT DISTINCT FROM {}").format(
                s.base, sql.Identifier(s.column("key")), sql.Literal(self.key(operation[1]))))
        elif kind == "truncate":
            self.application(sql.SQL("TRUNCATE {}").format(s.base))
        elif kind == "add_column":
            column = f"{operation[1]} {len(s.added)}".encode()[:60].decode(errors="ignore")
            if column in (s.key, s.data, s.flag, s.note) or column in s.added:
                return
            s.added.append(column)
            self.application(sql.SQL("ALTER TABLE {} ADD COLUMN {} int DEFAULT 7").format(
                s.base, sql.Identifier(column)))
        elif kind == "rename_note":
            new = operation[1]
            if new in (s.key, s.data, s.flag, s.note) or new in s.added or new.lower() in (
                    "ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"):
                return
            self.application(sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                s.base, sql.Identifier(s.note), sql.Identifier(new)))
            s.note = new
        elif kind == "rename":
            self.rename(operation[1], operation[2])
        elif kind == "run":
            self.run_and_check()
        elif kind == "mode":
            # Live: every later statement is processed in its own transaction
            # (the switch drains the backlog first); the checks hold as well.
            # A view has no triggers: Live is refused and changes nothing.
            if operation[1] == "Live" and self.source.kind == "view":
                self.refused_live()
                return
            self.conn.execute("SELECT aidb.update_pipeline(%s, %s)", (self.name, operation[1]))
            self.live = operation[1] == "Live"
            if self.live:
                self.check("after switching to Live")
            event(f"switched to {operation[1]}")
        elif kind == "run_beside_open_delete":
            self.run_beside_open_delete(self.key(operation[1]), operation[2])
        elif kind == "crash_run":
            self.crash_run()

    def refused_live(self):
        """A view pipeline switched to Live: refused, its mode kept."""
        before = self.conn.execute("SELECT auto_processing FROM aidb.pipelines WHERE name = %s",
                                   (self.name,)).fetchone()
        with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
            with self.conn.transaction():
                self.conn.execute("SELECT aidb.update_pipeline(%s, 'Live')", (self.name,))
        assert "cannot be Live" in raised.value.diag.message_primary
        assert self.conn.execute("SELECT auto_processing FROM aidb.pipelines WHERE name = %s",
                                 (self.name,)).fetchone() == before
        event("Live refused for a view")

    def refused_filter_rename(self, new):
        """Renaming the column the source_filter reads: refused, naming the
        pipeline and its filter; the column keeps its name."""
        s = self.source
        with pytest.raises(psycopg.errors.DependentObjectsStillExist) as raised:
            with self.conn.transaction():
                self.conn.execute(sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                    s.read_from, sql.Identifier(s.flag), sql.Identifier(new)))
        message = raised.value.diag.message_primary
        assert self.name in message and "source_filter" in message, message
        event("filter column rename refused")

    def rename(self, what, new):
        """A migration renaming the key, data or filter column, the source or
        its schema: the pipeline follows it (or refuses it, saying so)."""
        s = self.source
        if what == "schema":
            if new.lower().startswith("pg_"):
                return
            if self.application(sql.SQL("ALTER SCHEMA {} RENAME TO {}").format(
                    sql.Identifier(s.schema), sql.Identifier(new))):
                s.schema = new
            return
        if what == "relation":
            if self.application(sql.SQL("ALTER {} {} RENAME TO {}").format(
                    sql.SQL("VIEW" if s.kind == "view" else "TABLE"), s.read_from,
                    sql.Identifier(new))):
                if s.kind != "view":
                    s.table = new
                s.relation = new
            return
        if new.lower() in ("ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"):
            return
        if what == "flag" and s.with_filter:
            if new not in (s.key, s.data, s.flag, s.note) and new not in s.added:
                self.refused_filter_rename(new)     # the filter's text names it
            return
        old = getattr(s, what)
        if self.application(sql.SQL("ALTER TABLE {} RENAME COLUMN {} TO {}").format(
                s.read_from, sql.Identifier(old), sql.Identifier(new))):
            setattr(s, what, new)
            if s.kind == "view":        # the base table's column keeps its name
                s.base_names.setdefault(what, old)

    def run_and_check(self):
        self.runs += 1
        self.conn.execute("SELECT aidb.run_pipeline(%s)", (self.name,))
        self.check(f"after run {self.runs}")

    def check(self, context):
        backlog, errors = self.conn.execute(
            "SELECT \"table: unprocessed rows\", \"count(record errors)\" + \"count(blocking errors)\" "
            "FROM aidb.pipem WHERE pipeline = %s", (self.name,)).fetchone()
        listed = self.conn.execute("SELECT source_key, category, message FROM aidb.pipeline_errors "
                                   "WHERE pipeline = %s", (self.name,)).fetchall()
        assert (backlog, errors, listed) == (0, 0, []), \
            f"{context}: backlog {backlog}, errors {errors}: {listed[:3]}"
        rows = assert_destination_matches(self.conn, self.name, self.source, context)
        event("checked with destination rows" if rows else "checked with an empty destination")

    def run_beside_open_delete(self, key, data):
        """A key's new content is queued; another session deletes its row and
        stays open (holding the key's destination rows) while run_pipeline
        runs: the run must end without waiting for it, and once that
        session commits, the next run brings everything in step."""
        s = self.source
        self.application(sql.SQL("UPDATE {} SET {} = {} WHERE {} = {}").format(
            s.base, sql.Identifier(s.column("data")), sql.Literal(data),
            sql.Identifier(s.column("key")), sql.Literal(key)))
        other = self.connect()
        with other.transaction():
            other.execute("SET client_min_messages = warning")
            other.execute(sql.SQL("DELETE FROM {} WHERE {} = {}").format(
                s.base, sql.Identifier(s.column("key")), sql.Literal(key)))
            runner = self.connect()
            runner.execute("SET client_min_messages = warning")
            done = threading.Event()
            failure = []

            def run():
                try:
                    runner.execute("SELECT aidb.run_pipeline(%s)", (self.name,))
                except psycopg.Error as exc:
                    failure.append(exc)
                done.set()

            thread = threading.Thread(target=run)
            thread.start()
            finished = done.wait(60)
            event(f"run beside an open delete: {'ended' if finished else 'STALLED'}")
            assert finished, "run_pipeline waited for a session that holds a deleted row"
        thread.join(60)
        other.close()
        runner.close()
        assert not failure, f"run_pipeline failed beside an open delete: {failure[0]}"
        self.run_and_check()

    def crash_run(self):
        """run_pipeline, terminated while its batch waits to write the
        destination (another session holds the destination in SHARE mode):
        everything it did rolls back, nothing is lost."""
        destination = self.conn.execute("SELECT destination FROM aidb.pipelines WHERE name = %s",
                                        (self.name,)).fetchone()[0]
        blocker = self.connect()
        runner = self.connect()
        runner_pid = runner.info.backend_pid
        outcome = {}

        def run():
            try:
                runner.execute("SELECT aidb.run_pipeline(%s)", (self.name,))
                outcome["finished"] = True
            except psycopg.OperationalError as exc:
                outcome["terminated"] = exc

        with blocker.transaction():
            blocker.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(sql.SQL(destination)))
            thread = threading.Thread(target=run)
            thread.start()

            def blocked_or_done():
                if not thread.is_alive():
                    return "done"
                waiting = blocker.execute("SELECT EXISTS (SELECT FROM pg_locks WHERE pid = %s "
                                          "AND NOT granted)", (runner_pid,)).fetchone()[0]
                return "blocked" if waiting else None

            state = wait_for(blocked_or_done, timeout=60, message="the run to block or finish")
            if state == "blocked":
                blocker.execute("SELECT pg_terminate_backend(%s)", (runner_pid,))
            thread.join(60)
        assert not thread.is_alive(), "run_pipeline did not end"
        blocker.close()
        runner.close()
        note(f"crash_run: {state}")
        event(f"crash_run {state}")
        if state == "blocked":
            assert "terminated" in outcome, f"the terminated run ended with {outcome}"
        self.run_and_check()


# --- the properties --------------------------------------------------------------------------

_counter = iter(range(1 << 30))


def _pipeline_name(draw):
    return draw(st.sampled_from(["p", "Pipé", "p$1", "_x"])) + f"_{next(_counter)}"


@st.composite
def scenarios(draw, kinds=SOURCE_KINDS, key_types=tuple(KEY_TYPES)):
    source = draw(sources(kinds=kinds, key_types=key_types))
    pool = draw(st.lists(source.key_type.values, min_size=1, max_size=6))
    # Every key of the pool gets a row (one statement each: equal keys clash),
    # some before the pipeline exists, the others after.
    initial = [("insert", [(index, draw(data_values()), draw(st.sampled_from([True, None])))])
               for index in range(len(pool))]
    ops = draw(operations(len(pool)))
    before = draw(st.integers(0, len(initial)))
    return (source, pool, (initial[:before], initial[before:] + ops), draw(st.integers(1, 25)),
            draw(st.sampled_from(["chars", "words"])), _pipeline_name(draw))


def play(conn, connect, scenario):
    """Create the source and pipeline, apply the operations, run, check; drop it all."""
    source, pool, (before, after), chunk_length, strategy, name = scenario
    note(f"source {source}")
    create_source(conn, source)
    try:
        scenario_run = Scenario(conn, connect, source, pool, name)
        for operation in before:
            scenario_run.apply(operation)
        note("create_pipeline")
        create_chunk_pipeline(conn, name, source, chunk_length, strategy)
        for operation in after:
            scenario_run.apply(operation)
        scenario_run.run_and_check()
    finally:
        conn.execute("SELECT aidb.delete_pipeline(name, drop_destination => true) "
                     "FROM aidb.pipelines WHERE name = %s", (name,))
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(source.schema)))


@pytest.fixture
def quiet_conn(conn):
    """The test's connection, without the NOTICEs of every run."""
    conn.execute("SET client_min_messages = warning")
    return conn


@examples(ci=80)
@given(scenario=scenarios(kinds=("table",)))
def test_tables_stay_consistent(quiet_conn, connect, scenario):
    play(quiet_conn, connect, scenario)


@examples(ci=35)
@given(scenario=scenarios(kinds=("partitioned",)))
def test_partitioned_tables_stay_consistent(quiet_conn, connect, scenario):
    play(quiet_conn, connect, scenario)


@examples(ci=35)
@given(scenario=scenarios(kinds=("view",)))
def test_views_stay_consistent(quiet_conn, connect, scenario):
    play(quiet_conn, connect, scenario)


@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
@examples(ci=5)
@given(data=st.data())
def test_every_key_type(quiet_conn, connect, key_type, data):
    """A few examples of each key type, so that none is left to chance."""
    play(quiet_conn, connect, data.draw(scenarios(key_types=(key_type,))))


# --- what the search found, kept as fixed cases ----------------------------------------------

@pytest.mark.parametrize("key_type,nan", [("float8", float("nan")), ("numeric", decimal.Decimal("NaN"))])
def test_nan_keys_are_processed_and_leave_the_backlog(quiet_conn, connect, key_type, nan):
    """float8 and numeric NaN equal themselves in PostgreSQL, not in Python:
    a NaN key stayed in the backlog forever (found by the search above)."""
    source = Source(schema="s", table="t", kind="table", relation="t", key="k", data="d",
                    flag="f", note="n", key_type=KEY_TYPES[key_type], with_filter=False)
    ops = [("insert", [(0, "a b c", None)]), ("insert", [(1, None, None)]), ("run",),
           ("update_data", 0, "d e"), ("delete", 1), ("run",), ("delete", 0)]
    play(quiet_conn, connect, (source, [nan, 1], ([], ops), 2, "chars", f"nan_{key_type}"))


def test_a_filter_column_rename_is_refused_by_name(quiet_conn):
    """Renaming a column that the source_filter reads is refused with an
    error that names the pipeline and its filter; the pipeline still runs."""
    quiet_conn.execute("CREATE TABLE rf (id int PRIMARY KEY, body text, flag boolean)")
    quiet_conn.execute("INSERT INTO rf VALUES (1, 'a b', true), (2, 'c', false)")
    quiet_conn.execute("SELECT aidb.create_pipeline('prf', 'rf', source_data_column => 'body', "
                       "source_filter => 'flag IS NOT FALSE', step_1 => 'ChunkText', "
                       "step_1_options => aidb.chunk_text_config(2))")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as raised:
        quiet_conn.execute('ALTER TABLE rf RENAME COLUMN flag TO "fl %s"')
    assert 'pipeline "prf"' in raised.value.diag.message_primary
    assert "source_filter" in raised.value.diag.message_primary
    assert "flag IS NOT FALSE" in raised.value.diag.message_detail
    quiet_conn.execute("SELECT aidb.run_pipeline('prf')")
    assert quiet_conn.execute("SELECT count(DISTINCT source_key) FROM prf_embeddings").fetchone()[0] == 1


def test_a_key_held_by_an_open_delete_does_not_make_the_run_spin(quiet_conn, connect):
    """Found by the search: a key whose destination rows another open
    transaction holds was handed back and claimed again, forever (the
    batch did not report it busy, so the run never stopped)."""
    source = Source(schema="s", table="t", kind="table", relation="t", key="k", data="d",
                    flag="f", note="n", key_type=KEY_TYPES["int2"], with_filter=False)
    ops = [("insert", [(0, "long text here", None)]), ("insert", [(1, "x", None)]), ("run",),
           ("run_beside_open_delete", 0, None), ("run_beside_open_delete", 1, "y z")]
    play(quiet_conn, connect, (source, [0, 1], ([], ops), 5, "chars", "open_delete"))


def test_live_on_a_view_is_refused(quiet_conn):
    """Found by the search: a view source switched to Live was accepted, and
    the view's changes never reached the destination until a run. A volume
    source is refused Live with a hint; a view should be too."""
    quiet_conn.execute("CREATE TABLE base (id int PRIMARY KEY, body text)")
    quiet_conn.execute("CREATE VIEW v AS SELECT id, body FROM base")
    quiet_conn.execute("SELECT aidb.create_pipeline('pv', 'v', source_key_column => 'id', "
                       "source_data_column => 'body', step_1 => 'ChunkText', "
                       "step_1_options => aidb.chunk_text_config(5))")
    with pytest.raises(psycopg.Error) as raised:
        quiet_conn.execute("SELECT aidb.update_pipeline('pv', 'Live')")
    assert "view" in raised.value.diag.message_primary
