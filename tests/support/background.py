"""Driving Background pipelines in tests: start one and wait for its worker,
wait until it is drained, write a backfill, reconnect after a crash restart.
Unlike tests/support/workers.py, these wait (with a deadline)."""
from __future__ import annotations

import psycopg

from .pipeline_checks import create_docs, create_pipeline, metrics, pipeline_errors
from .polling import wait_for
from .workers import drained, running_worker

DRAIN_TIMEOUT = 60


def background_pipeline(conn, name="p", **options):
    """A Background pipeline over docs; returns its worker's pid once it runs."""
    create_pipeline(conn, name, auto_processing="Background", **options)
    return wait_for(lambda: running_worker(conn, name), message=f"the worker of {name}")


def wait_drained(conn, name="p"):
    """Until aidb.pipem says UpToDate; a timeout reports its row and the errors."""
    try:
        wait_for(lambda: drained(conn, name), timeout=DRAIN_TIMEOUT, message=f"{name} to drain")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {metrics(conn, name)}, errors: {pipeline_errors(conn, name)}"
                             ) from None


def fill_docs(conn, count):
    """docs with `count` rows, written in one statement (one backlog wake-up)."""
    create_docs(conn)
    conn.execute("INSERT INTO docs (id, body) SELECT g, 'document ' || g || ' of the backfill' "
                 "FROM generate_series(1, %s) g", (count,))


def destination_count(conn, name="p"):
    return metrics(conn, name)["count(destination records)"]


def wait_for_cluster(cluster, dbname):
    """After a crash restart: a fresh connection once the server accepts it again."""
    def try_connect():
        try:
            return psycopg.connect(cluster.dsn(dbname), autocommit=True)
        except psycopg.OperationalError:
            return None   # still recovering
    return wait_for(try_connect, timeout=60, message="the cluster to accept connections")
