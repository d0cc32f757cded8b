"""Database access for the engine: one small interface, two implementations.

- `plpy_db.PlpyDatabase`: inside PostgreSQL, over PL/Python's `plpy`.
- a psycopg implementation for the external worker.

Engine SQL is written with `%s` placeholders (psycopg's style); the plpy
adapter turns them into `$n` parameters of a cached prepared plan.
"""

import itertools
import re

_PLACEHOLDER = re.compile(r"%[s%]")


def map_placeholders(sql, placeholder, percent):
    """`sql` with its n-th `%s` (from 0) replaced by placeholder(n) and each
    `%%` (a literal %) by `percent`: the one reading of engine SQL's
    placeholders that both adapters rewrite."""
    counter = itertools.count()
    return _PLACEHOLDER.sub(
        lambda m: percent if m.group() == "%%" else placeholder(next(counter)), sql)


class Database:
    """What the engine needs from a database connection."""

    def query(self, sql, *params):
        """Run `sql`, return its rows as a list of dicts."""
        raise NotImplementedError

    def execute(self, sql, *params):
        """Run `sql` for its effect."""
        self.query(sql, *params)

    def savepoint(self):
        """A context manager: a subtransaction, rolled back if the block raises."""
        raise NotImplementedError

    def notice(self, message):
        """Tell the user something (a NOTICE inside PostgreSQL)."""

    def sleep(self, seconds):
        """Wait, in a way the database can interrupt (query cancel)."""
        raise NotImplementedError
