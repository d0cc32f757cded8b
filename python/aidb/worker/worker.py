"""aidb.Worker: drains Background pipelines from outside PostgreSQL.

Each of `concurrency` threads holds its own connection and loops over the
pipelines it serves, running one batch per transaction — the very batch the
in-database workers run (aidb.pipeline.runner.run_worker_batch), so any
number of external and background workers can share a pipeline: SKIP LOCKED
and per-key advisory locks keep them off each other's keys.
"""

import asyncio
import logging
import os
import socket
import threading
import uuid

from .. import __version__
from ..db.psycopg_db import PsycopgDatabase
from ..errors import AidbError
from ..models import ModelCache
from ..models.store import load_model
from ..pipeline.definition import load_pipeline
from ..pipeline.runner import run_worker_batch
from .settings import redact_url
from .stats import WorkerStats

log = logging.getLogger("aidb.worker")


class WorkerError(Exception):
    """A problem the worker cannot start with (bad URL, unknown pipeline)."""


class Worker:
    """Serve pipelines until `request_graceful_shutdown()` (or, with
    once=True, until nothing is pending)."""

    def __init__(self, db_url, pipelines=None, poll_interval=300.0, concurrency=1, once=False,
                 stats=None):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.db_url = db_url
        self.pipelines = list(pipelines or [])
        self.poll_interval = float(poll_interval)
        self.concurrency = concurrency
        self.once = once
        self.stats = stats or WorkerStats()
        self.worker_id = uuid.uuid4()
        self._stop = threading.Event()

    async def run(self):
        """Serve until asked to stop; returns the exit status (1: --once met errors)."""
        await asyncio.to_thread(self._check_startup)
        slots = [asyncio.to_thread(self._serve, slot) for slot in range(self.concurrency)]
        await asyncio.gather(*slots)
        return 1 if self.once and self.stats.errors else 0

    async def request_graceful_shutdown(self):
        """Finish the batches in flight, then return from run()."""
        self.shutdown()

    def shutdown(self):
        """Thread- and signal-safe form of request_graceful_shutdown()."""
        self._stop.set()

    # --- start-up checks ---------------------------------------------------------------

    def _connect(self):
        import psycopg
        try:
            return psycopg.connect(self.db_url, autocommit=True,
                                   application_name="aidb external worker")
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WorkerError(f"cannot connect to {redact_url(self.db_url)}: {reason}") from None

    def _check_startup(self):
        with self._connect() as connection:
            db = PsycopgDatabase(connection)
            if not db.query("SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'aidb'"):
                raise WorkerError("the database has no aidb extension (CREATE EXTENSION aidb)")
            known = {r["name"] for r in db.query("SELECT name FROM aidb.pipeline_registry")}
            missing = [name for name in self.pipelines if name not in known]
            if missing:
                raise WorkerError(f'pipeline "{missing[0]}" does not exist')

    # --- the loop of one thread -------------------------------------------------------

    def _serve(self, slot):
        with self._connect() as connection:
            db = PsycopgDatabase(connection, stop=self._stop)
            models = ModelCache()
            while not self._stop.is_set():
                names = self._pipelines_to_serve(db)
                did_work = any([self._drain_once(db, models, name) for name in names
                                if not self._stop.is_set()])
                self._heartbeat(db, names)
                if self.once and not did_work:
                    break
                if not did_work:
                    self._stop.wait(self.poll_interval)
            self._heartbeat(db, [], stopped=True)

    def _pipelines_to_serve(self, db):
        """Background pipelines (or the named ones); new ones are picked up."""
        rows = db.query("SELECT name FROM aidb.pipeline_registry "
                        "WHERE auto_processing = 'Background' OR name = ANY (%s) ORDER BY name",
                        self.pipelines)
        names = [r["name"] for r in rows]
        return [n for n in names if n in self.pipelines] if self.pipelines else names

    def _drain_once(self, db, models, name):
        """One batch of one pipeline in its own transaction; True if it did work."""
        try:
            with db.connection.transaction():
                pipeline = load_pipeline(db, name)
                processed = run_worker_batch(db, pipeline, lambda m: load_model(db, models, m))
        except AidbError as exc:
            self.stats.record_error(name, exc.message)
            log.warning("pipeline=%s error=%r", name, exc.message)
            return False
        except Exception as exc:  # noqa: BLE001 — one pipeline's failure must not stop the worker
            self.stats.record_error(name, str(exc))
            log.exception("pipeline=%s unexpected error", name)
            return False
        if processed < 0:
            self.stats.record_error(name, "batch failed (see aidb.pipeline_errors)")
            return False
        self.stats.record_batch(name, processed)
        if processed:
            log.info("pipeline=%s processed=%d", name, processed)
        return processed > 0

    def _heartbeat(self, db, names, stopped=False):
        """Tell aidb.workers (and aidb.pipem) that we are alive and what we serve."""
        try:
            db.query("SELECT aidb._worker_heartbeat(%s::uuid, %s, %s, %s, %s::text[], %s, %s, %s, %s)",
                     str(self.worker_id), socket.gethostname(), os.getpid(), __version__, names,
                     self.stats.keys_processed, self.stats.errors, self.poll_interval, stopped)
        except Exception:  # noqa: BLE001 — bookkeeping must never stop the work
            log.debug("heartbeat failed", exc_info=True)
