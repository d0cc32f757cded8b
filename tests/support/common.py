"""What test modules share beyond pipelines: the repository's root, the test
model server's API key, scratch databases, SQL errors, and polling."""
from __future__ import annotations

import contextlib
import os
import uuid

import psycopg
import pytest

from .polling import wait_for  # noqa: F401 — re-exported: tests import it from here

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TEST_API_KEY = "sk-test-key-0123456789abcdef"


@contextlib.contextmanager
def scratch_database(cluster, prefix, template=None):
    """A new database (a copy of `template`) for the block, dropped afterwards."""
    name = prefix + uuid.uuid4().hex[:12]
    cluster.psql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    try:
        yield name
    finally:
        cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def sql_error(conn, sql, params=()):
    """The error that `sql` must raise."""
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql, params)
    return info.value


def error_text(error):
    """Everything a client is shown of an error: message, detail, hint, context."""
    diag = error.diag
    parts = (diag.message_primary, diag.message_detail, diag.message_hint, diag.context)
    return "\n".join(part for part in parts if part)
