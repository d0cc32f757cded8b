"""Helpers for tests and benchmarks of the background workers: a pipeline's
worker as PostgreSQL shows it, whether a pipeline is drained, and what a
worker process costs (from /proc).

Every function here is a plain query or reading, meant to be polled with
tests.support.polling.wait_for; none of them waits by itself (tests/support/background.py
has the helpers that wait).
"""
from __future__ import annotations

import json
import os

import psycopg

from .pipeline_checks import metrics

APPLICATION_NAME = "aidb pipeline {}"
BACKEND_TYPE = "aidb pipeline worker"
BACKING_OFF = "backing off after errors"


def activity_pid(conn, name="p"):
    """Pid of the pipeline's worker in pg_stat_activity, or None."""
    row = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                       "AND backend_type = %s", (APPLICATION_NAME.format(name), BACKEND_TYPE)
                       ).fetchone()
    return row and row[0]


def running_worker(conn, name="p", other_than=None):
    """The pid of the pipeline's worker once aidb.pipem says it runs and
    pg_stat_activity shows that same process (and it is not `other_than`);
    else None."""
    row = metrics(conn, name)
    pid = row["worker pid"]
    if row["worker state"] != "running" or pid is None or pid == other_than:
        return None
    return pid if activity_pid(conn, name) == pid else None


def drained(conn, name="p"):
    """The backlog is empty and nothing failed: aidb.pipem says UpToDate."""
    row = metrics(conn, name)
    return row["table: unprocessed rows"] == 0 and row["Status"] == "UpToDate"


def connection_lost(conn):
    """Whether the server has closed this connection (e.g. in a crash restart)."""
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def set_model_config(conn, name, **config):
    """Merge `config` into a registered model's configuration (e.g. fewer
    retries, so that a failing batch ends within seconds). Processes pick
    the change up at their next batch: they rebuild a model whose
    definition changed."""
    conn.execute("UPDATE aidb.model_registry SET config = config || %s::jsonb WHERE name = %s",
                 (json.dumps(config), name))


def cpu_seconds(pid):
    """User + system CPU time a process has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        # Fields after the parenthesised command name (which may hold spaces).
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resident_kib(pid, field="VmRSS"):
    """Resident memory of a process in KiB: all of it (VmRSS), or one part
    (RssAnon: private to the process; RssFile, RssShmem: shared)."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise ValueError(f"no {field} for process {pid}")


def set_batches_in_flight(conn, value):
    """aidb.worker_batches_in_flight for the whole cluster (None: back to the
    default); background workers apply it at their next transaction."""
    if value is None:
        conn.execute("ALTER SYSTEM RESET aidb.worker_batches_in_flight")
    else:
        conn.execute(f"ALTER SYSTEM SET aidb.worker_batches_in_flight = {int(value)}")
    conn.execute("SELECT pg_reload_conf()")
