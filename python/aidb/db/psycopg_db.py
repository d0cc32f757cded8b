"""The engine's database outside PostgreSQL: a psycopg 3 connection."""

import functools
import logging
import threading

from . import Database, render

log = logging.getLogger("aidb.worker")


class PsycopgDatabase(Database):
    """Runs engine SQL on one psycopg connection (not shared between threads).
    `stop` is an Event that interrupts backoff sleeps at shutdown."""

    def __init__(self, connection, stop=None):
        from psycopg.rows import dict_row
        self.connection = connection
        self.connection.row_factory = dict_row
        self.stop = stop or threading.Event()

    def query(self, sql, *params):
        # Always pass a tuple: psycopg then turns %% into %, as the plpy adapter does.
        cursor = self.connection.execute(_binary_lists(sql, params),
                                         tuple(_adapt(p) for p in params))
        return cursor.fetchall() if cursor.description else []

    def savepoint(self):
        return self.connection.transaction()

    @property
    def database_identity(self):
        # One process may serve several databases (aidb.Worker objects of
        # different DSNs; a test run), whose pipelines have the same ids.
        info = self.connection.info
        return (info.host, info.port, info.dbname)

    def in_rolled_back_savepoint(self, function):
        """function()'s result, computed in a savepoint that is then rolled
        back: locks it took (a source's) are released at once."""
        import psycopg
        result = []
        with self.connection.transaction():
            result.append(function())
            raise psycopg.Rollback
        return result[0]

    def notice(self, message):
        log.info(message)

    def sleep(self, seconds):
        self.stop.wait(seconds)


@functools.lru_cache(maxsize=256)
def _binary_placeholders(sql, positions):
    """`sql` with the %s placeholders at `positions` (0-based) turned into %b."""
    return render(sql, lambda n: "%b" if n in positions else "%s", percent="%%")


def _binary_lists(sql, params):
    """Non-empty lists (a batch's keys, texts and vectors) travel in binary:
    psycopg builds an array's text form in Python, escaping every element,
    which cost a tenth of a batch. The engine casts every list parameter
    (%s::text[]), so the binary types need no guessing by the server."""
    positions = frozenset(i for i, p in enumerate(params) if isinstance(p, (list, tuple)) and p)
    return _binary_placeholders(sql, positions)


def _adapt(value):
    """dicts travel as jsonb, as they do through the plpy adapter."""
    if isinstance(value, dict):
        from psycopg.types.json import Jsonb
        return Jsonb(value)
    return value
