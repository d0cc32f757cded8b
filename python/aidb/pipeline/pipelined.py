"""Pipelined batches: how a worker keeps model requests in flight while it
writes (docs/architecture.md, "The batch protocol", pipelined workers).

A batch spans two transactions of one worker connection:

  claim  claim backlog rows, lock their keys (skipping keys leased by a live
         worker), read the source, lease the keys to this connection's token
         (leases.py), hand the model work to a thread; commit.
  write  (a later transaction, in claim order) wait for the model, lock the
         keys again and keep only those still leased to the token, write
         them, delete the claimed backlog rows (by tid and xmin), clear the
         leases; commit.

Each call of `PipelinedWorker.step` is one transaction's work: start a batch
if fewer than `size` are in flight, and write the oldest when it is ready,
when the window is full or when there is nothing more to claim. The model
work runs in threads that never touch the database (inside PostgreSQL they
run only while the backend is in Python: PL/Python holds the GIL outside
it, so the step waits for results in Python, where the GIL is released).

A step that rolled back (an error, a failed commit) is noticed by the next
one — or at once by `abandon` — which discards every batch in flight and
releases their leases: their backlog rows are still there, so the keys are
simply claimed again.
"""

import collections
import concurrent.futures
import time
from dataclasses import dataclass, field

from ..errors import AidbError, ModelError, PIPELINE_PERMANENT
from ..models.base import block_postgres_signals
from . import error_log, guard, runner
from .batch import BatchResult, Changes, ClaimCursor, Computed, SourceBusy, claim_keys, \
    prepare_work, read_changes, write_changes
from .key_identity import canonical_key
from .leases import hold_new_token
from .queries import BatchQueries, batch_queries
from .source import check_owner_can_read
from .vector_index import ensure_vector_index

DEFAULT_BATCHES_IN_FLIGHT = 8
MAX_BATCHES_IN_FLIGHT = 64
# After submitting a batch's model work: long enough for the pool thread and
# the model's own request thread to take the GIL in turn and send the request.
SEND_SECONDS = 0.001

_XACT_ID = "SELECT pg_catalog.pg_current_xact_id_if_assigned()::pg_catalog.text AS xid"
_XACT_STATUS = "SELECT pg_catalog.pg_xact_status(%s::pg_catalog.xid8) AS status"


@dataclass
class InFlight:
    """A batch between its claim and its write."""
    queries: BatchQueries
    rows: dict                  # key -> ["tid/xmin" of the backlog rows claimed for it]
    changes: Changes
    future: concurrent.futures.Future

    @property
    def keys(self):
        return list(self.rows)


@dataclass
class BatchWindow:
    """One connection's batches of one pipeline, oldest first."""
    name: str = ""
    batches: collections.deque = field(default_factory=collections.deque)
    cursor: ClaimCursor = field(default_factory=ClaimCursor)
    last_xid: str | None = None     # the last step's transaction, if it wrote anything
    last_step: list = field(default_factory=list)   # batches that step started or wrote
    last_write: float | None = None     # time.monotonic() of the last step that wrote
    unfinished: bool = False    # a step began and did not end: it raised, its transaction is gone
    # After a failure, one batch at a time until one is written: each step
    # then claims, waits and writes, so a failing provider fails every step
    # and the worker's backoff doubles (a step that only claimed would
    # count as work done and reset it).
    probing: bool = False


def model_thread_pool(max_workers=MAX_BATCHES_IN_FLIGHT):
    """Threads for batches' model work. They block PostgreSQL's signals, so
    that inside a backend the kernel delivers those to the main thread."""
    return concurrent.futures.ThreadPoolExecutor(max_workers=max_workers,
                                                 thread_name_prefix="aidb-batch",
                                                 initializer=block_postgres_signals)


def run_worker_step(db, worker, pipeline, model_loader, size, claim=True):
    """One transaction of a worker (background or external; it commits
    after each): (keys written, whether it did anything), or (-1, True) when
    the pipeline failed (recorded in the error log; the worker backs off). A
    view or volume source is reconciled when its backlog is empty and nothing
    is in flight, so a backfill does not rescan the view per batch. `size`:
    the most batches in flight; `claim=False` only writes those."""
    if claim and pipeline.source_type in ("view", "volume") and not worker.in_flight(pipeline.id) \
            and runner._backlog_empty(db, pipeline):
        runner.reconcile(db, pipeline)
    return worker.step(db, pipeline, model_loader, size, claim)


class PipelinedWorker:
    """The pipelined batches of one worker connection (a background worker's
    backend, an external worker's slot), per pipeline, with its lease token.
    `pool` runs the model work."""

    def __init__(self, pool):
        self.pool = pool
        self.token = None
        self.windows = {}

    def in_flight(self, pipeline_id):
        window = self.windows.get(pipeline_id)
        return len(window.batches) if window else 0

    def step(self, db, pipeline, model_loader, size, claim=True):
        """One transaction's work for `pipeline` (the caller commits after
        it): (keys written, whether anything was done), or (-1, True) when
        the pipeline failed (recorded; the worker backs off)."""
        window = self.windows.setdefault(pipeline.id, BatchWindow())
        window.name = pipeline.name
        self._recover_if_rolled_back(db, window)
        window.unfinished = True
        if self.token is None:
            self.token = hold_new_token(db)
        size = 1 if window.probing else size
        started, wrote, result, short_claim = False, False, BatchResult(), False
        try:
            if claim and len(window.batches) < size:
                _check_runnable(db, pipeline)
                started, short_claim = self._start_batch(db, pipeline, model_loader, window)
            oldest = window.batches[0] if window.batches else None
            if oldest and (len(window.batches) >= size or not started or oldest.future.done()):
                result, wrote = self._write_oldest(db, pipeline, window), True
        except (ModelError, SourceBusy, _NotRunnable) as exc:
            self._release(db, window, list(window.batches) + window.last_step)
            window.batches.clear()
            _record_failure(db, pipeline, getattr(exc, "cause", exc))
            window.last_step, window.unfinished, window.probing = [], False, True
            return -1, True
        self._finish_step(db, pipeline, window, result, short_claim)
        _let_model_threads_run()     # responses that came in meanwhile are read before the commit
        if wrote and result.processed:
            window.probing = False
        if wrote and result.busy and not result.processed:
            # Every key handed back (rows held by another open transaction):
            # back off instead of claiming them again at once.
            return -1, True
        return result.processed, started or wrote

    def names_in_flight(self):
        """The pipelines (by name) with batches in flight."""
        return [w.name for w in self.windows.values() if w.batches]

    def abandon(self, db, pipeline_id=None, name=None):
        """After a step rolled back: discard the batches in flight (of one
        pipeline, by id or name, or all) and release their leases, in `db`'s
        transaction. The batches are forgotten even if the release fails (a
        deleted pipeline's state table is gone; otherwise the leases die
        with the connection at the latest)."""
        for pid, window in list(self.windows.items()):
            if (pipeline_id is None or pid == pipeline_id) and (name is None or window.name == name):
                self.windows[pid] = BatchWindow(name=window.name, cursor=window.cursor,
                                                probing=True)
                try:
                    with db.savepoint():
                        self._release(db, window, list(window.batches) + window.last_step)
                except Exception:  # noqa: BLE001 — see above
                    pass

    # --- claim ------------------------------------------------------------------------

    def _start_batch(self, db, pipeline, model_loader, window):
        """Claim, lease and read a batch, and submit its model work: (whether a
        batch started, whether the claim came back short)."""
        queries = batch_queries(pipeline)
        claimed, stored = self._claim_free_keys(db, queries, pipeline, window.cursor)
        short = len(claimed) < pipeline.batch_size
        if not stored:
            return False, short
        # Read the source and load the model before leasing: a busy source or
        # a model that cannot be used (a refused host, say) raises, and the
        # step's failure handling commits, with nothing of this batch leased.
        changes = read_changes(db, pipeline, stored)
        work = prepare_work(pipeline, changes, model_loader)
        db.execute(queries.take_leases, self.token, list(stored))
        rows = {key: [] for key in stored}
        for row in claimed:
            if row["key"] in rows:
                rows[row["key"]].append(f'{row["tid"]}/{row["xmin"]}')
        batch = InFlight(queries=queries, rows=rows, changes=changes, future=self.pool.submit(work))
        _let_model_threads_run(SEND_SECONDS)     # the request goes out now, not at our next wait
        window.batches.append(batch)
        window.last_step.append(batch)
        return True, short

    @staticmethod
    def _claim_free_keys(db, queries, pipeline, cursor):
        """(claimed rows, {key: stored hash}) of the first rows after `cursor`
        whose keys nobody holds: rows of held keys (a key locked by another
        claim, or leased by a batch in flight) are passed over, so that a
        claim that meets them goes on to later rows instead of coming back
        empty-handed. Once at the end of the
        backlog, it starts again from the first page, once."""
        rewound = False
        while True:
            claimed, stored = claim_keys(db, queries, pipeline, cursor, pipelined=True)
            if stored:
                return claimed, stored
            if not claimed:
                if rewound or not cursor.rewind():
                    return [], {}
                rewound = True

    # --- write ------------------------------------------------------------------------

    def _write_oldest(self, db, pipeline, window):
        """Wait for the oldest batch's model work and write the keys whose
        lease is still ours; the others' results are dropped (their backlog
        rows stay, so they are processed again)."""
        batch = window.batches.popleft()
        window.last_step.append(batch)
        computed = _wait(db, batch.future)      # raises the model's error, if any
        queries = batch_queries(pipeline)
        ours = {canonical_key(row["key"])
                for row in db.query(queries.relock_leased, batch.keys, self.token)}
        versions = [v for key in batch.keys if key in ours for v in batch.rows[key]]
        if versions:
            db.execute(queries.delete_claimed_versions,
                       [v.split("/")[0] for v in versions], versions)
        result = write_changes(db, pipeline, _only(batch.changes, ours), _only_computed(computed, ours))
        if ours:
            db.execute(queries.release_leases, list(ours), self.token)
        result.claimed = sum(len(batch.rows[key]) for key in ours)
        return result

    # --- bookkeeping ------------------------------------------------------------------

    def _finish_step(self, db, pipeline, window, result, short_claim):
        """Stats, cleared errors, the vector index once drained; remember
        this transaction, so that the next step can tell if it committed."""
        if result.processed:
            error_log.clear_pipeline_errors(db, pipeline.id)
        if short_claim and not window.batches and runner._backlog_empty(db, pipeline):
            ensure_vector_index(db, pipeline)
        if result.processed or result.failed:
            # The rate over the time since this window's previous write: steps
            # overlap with the model's work, so a step's own duration says little.
            now = time.monotonic()
            seconds, window.last_write = max(now - (window.last_write or now), 0.001), now
            runner._save_stats(db, pipeline, runner.RunSummary(
                processed=result.processed, embedded=result.embedded, removed=result.removed,
                failed=result.failed, busy=result.busy, seconds=seconds), wait=False)
        window.last_xid = db.query(_XACT_ID)[0]["xid"]
        if window.last_xid is None:
            window.last_step = []
        window.unfinished = False

    def _recover_if_rolled_back(self, db, window):
        """If the previous step raised (its transaction rolled back) or its
        commit failed, its leases and writes are gone or stale: discard
        everything in flight and release what is still leased to us."""
        rolled_back = window.unfinished
        if window.last_xid is not None and not rolled_back:
            status = db.query(_XACT_STATUS, window.last_xid)[0]["status"]
            rolled_back = status not in ("committed", "in progress")
        if rolled_back:
            self._release(db, window, list(window.batches) + window.last_step)
            window.batches.clear()
            window.probing = True
        window.last_xid, window.last_step, window.unfinished = None, [], False

    def _release(self, db, window, batches):
        """Clear our leases on the keys of `batches` (those still ours)."""
        if self.token is None:
            return
        for batch in batches:
            batch.future.cancel()
            db.execute(batch.queries.release_leases, batch.keys, self.token)


class _NotRunnable(Exception):
    """The pipeline's objects or rights fail the checks (`cause`, an AidbError)."""

    def __init__(self, cause):
        super().__init__(cause.message)
        self.cause = cause


def _check_runnable(db, pipeline):
    """The checks run_pipeline makes before it claims (guard, source rights)."""
    try:
        guard.check_pipeline_objects(db, pipeline)
        check_owner_can_read(db, pipeline)
    except AidbError as exc:
        raise _NotRunnable(exc) from None


def _record_failure(db, pipeline, exc):
    """As run_pipeline records a failed batch, with its stats row."""
    if isinstance(exc, (ModelError, SourceBusy)):
        runner._record_failure(db, pipeline, exc)
    else:
        error_log.record_pipeline_error(db, pipeline.id, "source", PIPELINE_PERMANENT, exc.message)
    runner._save_stats(db, pipeline, runner.RunSummary(error=exc, seconds=0.001), wait=False)


def _let_model_threads_run(seconds=0.0):
    """Hand the GIL to the model threads for a moment. Inside PostgreSQL,
    PL/Python holds it whenever the backend runs C (SPI, commit): threads
    that have a request to send or a response to read progress only when
    this thread runs Python, sleeps or waits. A sleep releases it."""
    time.sleep(seconds)


def _wait(db, future):
    """The future's result, checking for a query cancel meanwhile (db.sleep(0)
    is pg_sleep(0) inside PostgreSQL)."""
    while True:
        try:
            return future.result(timeout=0.1)
        except concurrent.futures.TimeoutError:
            db.sleep(0)


def _only(changes, keys):
    """`changes` restricted to `keys`."""
    return Changes(keys=[k for k in changes.keys if k in keys],
                   changed=[r for r in changes.changed if r["key"] in keys],
                   gone=[k for k in changes.gone if k in keys],
                   failures={k: v for k, v in changes.failures.items() if k in keys})


def _only_computed(computed, keys):
    return Computed(parts={k: v for k, v in computed.parts.items() if k in keys},
                    vectors={k: v for k, v in computed.vectors.items() if k in keys},
                    failures={k: v for k, v in computed.failures.items() if k in keys})
