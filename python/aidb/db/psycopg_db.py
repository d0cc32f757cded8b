"""The engine's database outside PostgreSQL: a psycopg 3 connection."""

import logging
import threading

from . import Database

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
        cursor = self.connection.execute(sql, tuple(_adapt(p) for p in params))
        return cursor.fetchall() if cursor.description else []

    def savepoint(self):
        return self.connection.transaction()

    def notice(self, message):
        log.info(message)

    def sleep(self, seconds):
        self.stop.wait(seconds)


def _adapt(value):
    """dicts travel as jsonb, as they do through the plpy adapter."""
    if isinstance(value, dict):
        from psycopg.types.json import Jsonb
        return Jsonb(value)
    return value
