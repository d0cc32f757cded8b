"""Database access for the engine: one small interface, two implementations.

- `plpy_db.PlpyDatabase`: inside PostgreSQL, over PL/Python's `plpy`.
- a psycopg implementation for the external worker.

Engine SQL is a plain string or an aidb.sqltext.Sql with `%s` parameters
(psycopg's style); the plpy adapter renders them as `$n` parameters of a
cached prepared plan, the psycopg adapter as `%s` / `%b`.
"""

from ..sqltext import as_sql


def render(statement, placeholder, percent):
    """The text of `statement` (str or Sql): its n-th `%s` (from 0) replaced
    by placeholder(n), each literal percent sign by `percent`."""
    return as_sql(statement).render(placeholder, percent)


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

    def in_rolled_back_savepoint(self, function):
        """function()'s result, computed in a subtransaction then rolled back."""
        raise NotImplementedError

    def resolve_with_caller_path(self, sql, *params):
        """Rows of `sql` under the search_path of the engine's caller (outside
        PostgreSQL there is only the connection's own)."""
        return self.query(sql, *params)

    def notice(self, message):
        """Tell the user something (a NOTICE inside PostgreSQL)."""

    @property
    def database_identity(self):
        """What tells this connection's database from others this process
        serves (None inside PostgreSQL: a backend serves one database)."""
        return None

    def sleep(self, seconds):
        """Wait, in a way the database can interrupt (query cancel)."""
        raise NotImplementedError
