"""The engine's database inside PostgreSQL: a thin adapter over PL/Python's plpy."""

import json

import plpy

from . import Database, map_placeholders

def _pg_type(value):
    """The parameter type to declare for a Python value (plpy needs one)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "bigint"
    if isinstance(value, float):
        return "double precision"
    if isinstance(value, dict):
        return "jsonb"
    if isinstance(value, bytes):
        return "bytea"
    if isinstance(value, (list, tuple)):
        inner = _pg_type(value[0]) if value else "text"
        return inner + "[]"
    return "text"


def _to_plpy(value):
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, tuple):
        return list(value)
    return value


class PlpyDatabase(Database):
    """Runs engine SQL through SPI, in the calling backend's transaction."""

    def __init__(self):
        self._plans = {}

    def query(self, sql, *params):
        types = tuple(_pg_type(p) for p in params)
        plan = self._plan(sql, types)
        rows = plpy.execute(plan, [_to_plpy(p) for p in params]) if params else plpy.execute(plan)
        return [dict(row) for row in rows]

    def _plan(self, sql, types):
        key = (sql, types)
        plan = self._plans.get(key)
        if plan is None:
            numbered = map_placeholders(sql, lambda n: f"${n + 1}", percent="%")
            plan = plpy.prepare(numbered, list(types))
            self._plans[key] = plan
        return plan

    def savepoint(self):
        return plpy.subtransaction()

    def notice(self, message):
        plpy.notice(message)

    def sleep(self, seconds):
        # pg_sleep checks for interrupts, so a query cancel stops the wait.
        plpy.execute(f"SELECT pg_catalog.pg_sleep({float(seconds)!r})")
