"""The engine's database inside PostgreSQL: a thin adapter over PL/Python's plpy."""

import contextlib
import json

import plpy

from . import Database, render

def _pg_type(value):
    """The parameter type to declare for a Python value (plpy needs one),
    schema-qualified or a keyword: a plan may be prepared under the caller's
    search_path (resolve_with_caller_path), where a `text` of another schema
    could stand in for pg_catalog's."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, dict):
        return "pg_catalog.jsonb"
    if isinstance(value, bytes):
        return "pg_catalog.bytea"
    if isinstance(value, (list, tuple)):
        inner = _pg_type(value[0]) if value else "pg_catalog.text"
        return inner + "[]"
    return "pg_catalog.text"


def _to_plpy(value):
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, tuple):
        return list(value)
    return value


class _RollBack(Exception):
    """Ends a subtransaction that only read."""


class PlpyDatabase(Database):
    """Runs engine SQL through SPI, in the calling backend's transaction."""

    def __init__(self):
        self._plans = {}
        self.caller_search_path = None

    def query(self, sql, *params):
        types = tuple(_pg_type(p) for p in params)
        plan = self._plan(sql, types)
        rows = plpy.execute(plan, [_to_plpy(p) for p in params]) if params else plpy.execute(plan)
        return [dict(row) for row in rows]

    def _plan(self, sql, types):
        key = (sql, types)
        plan = self._plans.get(key)
        if plan is None:
            numbered = render(sql, lambda n: f"${n + 1}", percent="%")
            plan = plpy.prepare(numbered, list(types))
            self._plans[key] = plan
        return plan

    def savepoint(self):
        return plpy.subtransaction()

    @contextlib.contextmanager
    def engine_search_path(self, path):
        """Run the block under search_path `path`, remembering the caller's."""
        with _search_path(path) as caller:
            outer, self.caller_search_path = self.caller_search_path, caller
            try:
                yield
            finally:
                self.caller_search_path = outer

    def resolve_with_caller_path(self, sql, *params):
        """Rows of `sql` run under the caller's search_path: for turning the
        names a user passed (a table, a schema to create in) into objects."""
        if self.caller_search_path is None:
            return self.query(sql, *params)
        with _search_path(self.caller_search_path):
            return self.query(sql, *params)

    def in_rolled_back_savepoint(self, function):
        """function()'s result, computed in a subtransaction that is then
        rolled back: locks it took (a source's) are released at once."""
        result = []
        try:
            with plpy.subtransaction():
                result.append(function())
                raise _RollBack
        except _RollBack:
            pass
        return result[0]

    def notice(self, message):
        plpy.notice(message)

    def sleep(self, seconds):
        # pg_sleep checks for interrupts, so a query cancel stops the wait.
        plpy.execute(f"SELECT pg_catalog.pg_sleep({float(seconds)!r})")


_SET_SEARCH_PATH = "SELECT pg_catalog.set_config('search_path', $1, true)"


@contextlib.contextmanager
def _search_path(path):
    """Run the block under search_path `path` (for this transaction), then
    put back the one in force before, which the block receives."""
    before = plpy.execute("SELECT pg_catalog.current_setting('search_path') AS p")[0]["p"]
    plan = plpy.prepare(_SET_SEARCH_PATH, ["pg_catalog.text"])
    plpy.execute(plan, [path])
    try:
        yield before
    finally:
        plpy.execute(plan, [before])
