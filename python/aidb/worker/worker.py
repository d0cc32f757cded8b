"""aidb.Worker: drains Background pipelines from outside PostgreSQL.

Each of `concurrency` threads holds its own connection and loops over the
pipelines it serves, one transaction per step of the pipelined batches the
in-database workers run too (aidb.pipeline.pipelined): up to
`batches_in_flight` batches per pipeline wait for the model while the
oldest is written. Any number of external and background workers can share
a pipeline: SKIP LOCKED, state-row locks and leases keep them off each
other's keys. A thread whose
connection breaks (server restart, terminated backend) reconnects, backing
off; a batch cut short that way rolls back into the backlog.
"""

import asyncio
import concurrent.futures
import logging
import os
import socket
import threading
import time
import uuid

from .. import __version__
from ..db.psycopg_db import PsycopgDatabase
from ..errors import AidbError
from ..models import ModelCache
from ..models.store import load_model
from ..pipeline.definition import load_pipeline
from ..pipeline.pipelined import DEFAULT_BATCHES_IN_FLIGHT, MAX_BATCHES_IN_FLIGHT, \
    PipelinedWorker, model_thread_pool, run_worker_step
from ..pipeline.queries import batch_queries
from ..redact import redact
from .settings import redact_db_error, redact_url
from .stats import WorkerStats

log = logging.getLogger("aidb.worker")

RECONNECT_MAX_SECONDS = 30
# After a failed batch, a pipeline waits 1 s, 2 s, 4 s ... at most 5 minutes
# before its next one, as with the background workers (src/worker.c).
MIN_BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0


class WorkerError(Exception):
    """A problem the worker cannot go on with: a bad URL, an unknown pipeline,
    or (with once=True) a lost connection."""


class Worker:
    """Serve pipelines until `request_graceful_shutdown()` (or, with
    once=True, until nothing is pending)."""

    def __init__(self, db_url, pipelines=None, poll_interval=300.0, concurrency=1, once=False,
                 stats=None, batches_in_flight=DEFAULT_BATCHES_IN_FLIGHT):
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not 1 <= batches_in_flight <= MAX_BATCHES_IN_FLIGHT:
            raise ValueError(f"batches_in_flight must be 1 to {MAX_BATCHES_IN_FLIGHT}")
        self.batches_in_flight = batches_in_flight
        self.db_url = db_url
        self.pipelines = list(pipelines or [])
        self.poll_interval = float(poll_interval)
        self.concurrency = concurrency
        self.once = once
        self.stats = stats or WorkerStats()
        self.worker_id = uuid.uuid4()
        self._stop = threading.Event()
        self._backoff = Backoff()

    async def run(self):
        """Serve until asked to stop; returns the exit status (1: --once met errors)."""
        await asyncio.to_thread(self._check_startup)
        # One thread per slot: asyncio's default pool has cores + 4 threads,
        # so -c 8 on two cores would run only 6 batches at once.
        self._slots_pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=self.concurrency, thread_name_prefix="aidb-slot")
        # The batches' model work, each slot's up to batches_in_flight at once.
        self._model_pool = model_thread_pool(self.concurrency * self.batches_in_flight)
        try:
            outcomes = await asyncio.gather(*(self._slot(n) for n in range(self.concurrency)),
                                            return_exceptions=True)
        finally:
            self._slots_pool.shutdown(wait=False)
            self._model_pool.shutdown(wait=False, cancel_futures=True)
            await asyncio.to_thread(self._heartbeat_stopped)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            raise failures[0]
        return 1 if self.once and self.stats.errors else 0

    async def request_graceful_shutdown(self):
        """Finish the batches in flight, then return from run()."""
        self.shutdown()

    def shutdown(self):
        """Thread- and signal-safe form of request_graceful_shutdown()."""
        self._stop.set()

    async def _slot(self, slot):
        try:
            await asyncio.get_running_loop().run_in_executor(self._slots_pool, self._serve, slot)
        except BaseException:
            # A slot that fails (or a run() that is cancelled) stops the others
            # after their batch: threads cannot be cancelled, only asked.
            self.shutdown()
            raise

    # --- start-up checks ---------------------------------------------------------------

    def _connect(self):
        import psycopg
        try:
            # Engine SQL qualifies what it names; the fixed search_path makes
            # sure nothing unqualified could resolve to another user's object.
            return psycopg.connect(self.db_url, autocommit=True,
                                   application_name="aidb external worker",
                                   options="-c search_path=pg_catalog,pg_temp")
        except psycopg.Error as exc:
            reason = redact_db_error(_first_line(exc), self.db_url)
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
            self._heartbeat(db, self._pipelines_to_serve(db))   # listed in aidb.workers at once

    # --- the loop of one thread -------------------------------------------------------

    def _serve(self, slot):
        """Serve on one connection; reconnect (backing off) when it is lost,
        unless running --once."""
        failures = 0
        while not self._stop.is_set():
            try:
                with self._connect() as connection:
                    failures = 0
                    self._serve_on(PsycopgDatabase(connection, stop=self._stop))
                return
            except (WorkerError, _ConnectionLost) as exc:
                if self.once:
                    raise WorkerError(str(exc)) from None
                failures += 1
                delay = min(RECONNECT_MAX_SECONDS, 2 ** failures)
                log.warning("slot %d: %s; reconnecting in %ds", slot, exc, delay)
                self._stop.wait(delay)

    def _serve_on(self, db):
        """Passes over the pipelines, one step of each that is not backing
        off; when a pass does nothing, wait for the poll interval (or the
        end of the next backoff). At shutdown, the batches in flight are
        written first."""
        models = ModelCache()
        batches = PipelinedWorker(self._model_pool)   # this connection's, with its lease token
        while not self._stop.is_set():
            names = self._pipelines_to_serve(db)
            # A pipeline no longer served (deleted, not Background) gets its
            # batches in flight written (or released), not kept leased.
            stale = [n for n in batches.names_in_flight() if n not in names]
            did_work = any([self._drain_once(db, models, batches, name, claim=name not in stale)
                            for name in names + stale
                            if self._backoff.ready(name) and not self._stop.is_set()])
            self._heartbeat(db, names)
            if self.once and not did_work:
                break
            if not did_work:
                self._stop.wait(self._backoff.wait(self.poll_interval))
        for name in batches.names_in_flight():
            while name in batches.names_in_flight() and self._drain_once(db, models, batches, name,
                                                                         claim=False):
                pass

    def _pipelines_to_serve(self, db):
        """Background pipelines (or the named ones); new ones are picked up."""
        rows = _checked(db, "SELECT name FROM aidb.pipeline_registry WHERE "
                        "auto_processing = 'Background' OR name = ANY (%s) ORDER BY name",
                        self.pipelines)
        names = [r["name"] for r in rows]
        return [n for n in names if n in self.pipelines] if self.pipelines else names

    def _drain_once(self, db, models, batches, name, claim=True):
        """One step of one pipeline in its own transaction (start a batch,
        write the oldest in flight); True if it did work."""
        pipeline = None
        try:
            with db.connection.transaction():
                pipeline = load_pipeline(db, name)
                processed, did_work = run_worker_step(
                    db, batches, pipeline, lambda m: load_model(db, models, m),
                    self.batches_in_flight, claim)
        except AidbError as exc:
            self._abandon(db, batches, name)
            return self._failed(db, name, pipeline, exc.message)
        except Exception as exc:  # noqa: BLE001 — one pipeline's failure must not stop the worker
            if db.connection.closed:
                raise _ConnectionLost(f"lost the connection: {_first_line(exc)}") from None
            log.exception("pipeline=%s unexpected error", name)
            self._abandon(db, batches, name)
            return self._failed(db, name, pipeline, str(exc))
        if processed < 0:
            return self._failed(db, name, pipeline, _last_error(db, pipeline))
        self._backoff.succeeded(name)
        if processed or not did_work:
            self.stats.record_batch(name, processed, self._pending(db, pipeline, idle=not did_work))
        if processed:
            # Flagged: the progress display shows batches as bars instead.
            log.info("pipeline=%s processed=%d", name, processed, extra={"batch": True})
        return did_work

    def _abandon(self, db, batches, name):
        """After a step rolled back: release the leases of the pipeline's
        batches in flight at once (their keys are claimed again), so other
        workers need not wait out our backoff."""
        try:
            with db.connection.transaction():
                batches.abandon(db, name=name)
        except Exception:  # noqa: BLE001 — the next step (or our disconnect) releases them
            if db.connection.closed:
                raise _ConnectionLost("lost the connection") from None
            log.debug("pipeline=%s releasing leases failed", name, exc_info=True)

    def _failed(self, db, name, pipeline, message):
        delay = self._backoff.failed(name)
        pending = self._pending(db, pipeline, idle=True) if pipeline else None
        self.stats.record_error(name, pending)
        log.warning("pipeline=%s error=%r retry_in=%.0fs", name, message, delay)
        return False

    def _pending(self, db, pipeline, idle):
        """Keys left in the backlog, when a progress display or the metrics
        want it (a count over the backlog, so at most every second or so)."""
        if not self.stats.pending_due(pipeline.name, idle):
            return None
        try:
            return _checked(db, batch_queries(pipeline).pending_keys)[0]["n"]
        except _ConnectionLost:
            raise
        except Exception:  # noqa: BLE001 — e.g. the pipeline was deleted just now
            log.debug("pipeline=%s pending count failed", pipeline.name, exc_info=True)
            return None

    def _heartbeat(self, db, names, stopped=False):
        """Tell aidb.workers that we are alive and what we serve."""
        try:
            db.query("SELECT aidb._worker_heartbeat(%s::uuid, %s, %s, %s, %s::text[], "
                     "%s, %s, %s, %s)",
                     str(self.worker_id), socket.gethostname(), os.getpid(), __version__, names,
                     self.stats.keys_processed, self.stats.errors, self.poll_interval, stopped)
        except Exception:  # noqa: BLE001 — bookkeeping must never stop the work
            log.debug("heartbeat failed", exc_info=True)

    def _heartbeat_stopped(self):
        """Once every slot has finished: aidb.workers shows us as stopped."""
        try:
            with self._connect() as connection:
                self._heartbeat(PsycopgDatabase(connection), [], stopped=True)
        except WorkerError:
            log.debug("final heartbeat failed", exc_info=True)


class Backoff:
    """Per pipeline, shared by a worker's threads: when it may run again
    after failures. A failing pipeline never holds up the others."""

    def __init__(self):
        self._lock = threading.Lock()
        self._delays = {}        # pipeline -> (seconds, time.monotonic() it may run again)

    def ready(self, name):
        with self._lock:
            return time.monotonic() >= self._delays.get(name, (0, 0))[1]

    def failed(self, name):
        """Record a failure; returns the seconds until the next try."""
        with self._lock:
            previous = self._delays.get(name, (0, 0))[0]
            delay = min(max(previous * 2, MIN_BACKOFF_SECONDS), MAX_BACKOFF_SECONDS)
            self._delays[name] = (delay, time.monotonic() + delay)
            return delay

    def succeeded(self, name):
        with self._lock:
            self._delays.pop(name, None)

    def wait(self, poll_interval):
        """How long an idle pass waits: the poll interval, or less when a
        backoff ends sooner."""
        with self._lock:
            ends = [until for _, until in self._delays.values()]
        return max(0.0, min([poll_interval] + [until - time.monotonic() for until in ends]))


class _ConnectionLost(Exception):
    """The database connection broke (server restart, terminated backend)."""


def _checked(db, sql, *params):
    """db.query, with a broken connection reported as _ConnectionLost."""
    try:
        return db.query(sql, *params)
    except Exception as exc:
        if db.connection.closed:
            raise _ConnectionLost(f"lost the connection: {_first_line(exc)}") from None
        raise


def _last_error(db, pipeline):
    """Why the batch just committed failed: the engine recorded it for aidb.pipem."""
    rows = _checked(db, "SELECT last_error FROM aidb.pipeline_run_stats WHERE pipeline_id = %s",
                    pipeline.id)
    return (rows and rows[0]["last_error"]) or "batch failed (see aidb.pipeline_errors)"


def _first_line(exc):
    """The first line of a driver error, with secrets masked."""
    text = str(exc).strip()
    return redact(text.splitlines()[0]) if text else type(exc).__name__
