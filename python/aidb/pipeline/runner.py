"""Draining a pipeline's backlog: run_pipeline (all pending work now, in the
caller's transaction), one batch for a worker, and drift reconciliation.

Each batch runs in a savepoint. When the provider is down (after the model
layer's own retries) or the configuration is broken, the savepoint is rolled
back — the batch's keys are back in the backlog — the error is recorded for
aidb.pipeline_errors / aidb.pipem, and draining stops.
"""

import time
from contextlib import contextmanager
from dataclasses import dataclass

from ..errors import AidbError, ModelError, PIPELINE_PERMANENT, PIPELINE_TEMPORARY
from . import error_log, volume_source
from .batch import run_batch
from .queries import BatchQueries
from .source import check_owner_can_read
from .vector_index import ensure_vector_index

PROGRESS_EVERY_SECONDS = 5.0


@dataclass
class RunSummary:
    processed: int = 0
    embedded: int = 0
    removed: int = 0
    failed: int = 0
    seconds: float = 0.0
    error: ModelError | None = None

    @property
    def rate(self):
        return self.processed / self.seconds if self.seconds > 0 else None


def run_pipeline(db, pipeline, model_loader, max_batches=None, progress=True, reconcile_view=True):
    """Process pending work until the backlog is empty (or only holds keys
    that other processes are working on), or a batch fails. Runs with the
    pipeline owner's rights, whoever calls it (DESIGN.md: the source_filter
    never runs with anyone else's)."""
    with as_pipeline_owner(db, pipeline):
        return _run_as_owner(db, pipeline, model_loader, max_batches, progress, reconcile_view)


def _run_as_owner(db, pipeline, model_loader, max_batches, progress, reconcile_view):
    started = time.monotonic()
    summary = RunSummary()
    try:
        check_owner_can_read(db, pipeline)
    except AidbError as exc:
        summary.error, summary.seconds = exc, time.monotonic() - started
        error_log.record_pipeline_error(db, pipeline.id, "source", PIPELINE_PERMANENT, exc.message)
        _save_stats(db, pipeline, summary)
        return summary
    _lock_source(db, pipeline)
    if pipeline.source_kind in ("view", "volume") and reconcile_view:
        reconcile(db, pipeline)
    pending = _pending(db, pipeline) if progress else 0
    claimed_so_far, batches, last_report = [], 0, started
    while max_batches is None or batches < max_batches:
        try:
            with db.savepoint():
                result = run_batch(db, pipeline, model_loader, claimed_so_far)
        except ModelError as exc:
            summary.error = exc
            _record_failure(db, pipeline, exc)
            break
        if not result.claimed:
            break
        batches += 1
        claimed_so_far += result.claimed
        for name in ("processed", "embedded", "removed", "failed"):
            setattr(summary, name, getattr(summary, name) + getattr(result, name))
        if progress and time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            _report(db, pipeline, summary, pending, last_report - started)
    summary.seconds = time.monotonic() - started
    if summary.error is None and summary.processed:
        error_log.clear_pipeline_errors(db, pipeline.id)
        if _backlog_empty(db, pipeline):
            ensure_vector_index(db, pipeline)     # once the (initial) backlog is drained
    _save_stats(db, pipeline, summary)
    return summary


@contextmanager
def as_pipeline_owner(db, pipeline):
    """SET ROLE to the pipeline's owner for the block (as is_local, so a
    failed transaction resets it too), then back to the caller's role."""
    previous = db.query("SELECT current_setting('role') AS r")[0]["r"]
    owner = db.query("SELECT rolname FROM pg_catalog.pg_roles WHERE oid = %s::regrole",
                     pipeline.owner_role)[0]["rolname"]
    db.execute("SELECT set_config('role', %s, true)", owner)
    try:
        yield
    finally:
        db.execute("SELECT set_config('role', %s, true)", previous)


def _pending(db, pipeline):
    return db.query(BatchQueries(pipeline).pending_keys)[0]["n"]


def _backlog_empty(db, pipeline):
    return db.query(BatchQueries(pipeline).backlog_empty)[0]["empty"]


def _report(db, pipeline, summary, pending, elapsed):
    db.notice(f'pipeline "{pipeline.name}": {summary.processed} of ~{pending} keys processed '
              f"({summary.processed / elapsed:.0f} keys/s)")


def _record_failure(db, pipeline, exc):
    category = PIPELINE_PERMANENT if exc.category == PIPELINE_PERMANENT else PIPELINE_TEMPORARY
    error_log.record_pipeline_error(db, pipeline.id, "KnowledgeBase", category, exc.message)


def _save_stats(db, pipeline, summary):
    db.execute("""
        INSERT INTO aidb.pipeline_run_stats (pipeline_id, last_run, keys_processed, last_rate, last_error)
        VALUES (%s, now(), %s, %s, %s)
        ON CONFLICT (pipeline_id) DO UPDATE
        SET last_run = EXCLUDED.last_run,
            keys_processed = pipeline_run_stats.keys_processed + EXCLUDED.keys_processed,
            last_rate = coalesce(EXCLUDED.last_rate, pipeline_run_stats.last_rate),
            last_error = EXCLUDED.last_error""",
               pipeline.id, summary.processed, summary.rate,
               summary.error.message if summary.error else None)


def _lock_source(db, pipeline):
    """Source before backlog: the lock order of TRUNCATE's capture trigger
    (see BatchQueries.lock_source); held until the caller's transaction ends."""
    if pipeline.source_kind != "volume":
        db.execute(BatchQueries(pipeline).lock_source)


def reconcile(db, pipeline):
    """Enqueue every key whose source content differs from what the
    destination was built from; returns how many were found. For a volume,
    that is a scan of it."""
    if pipeline.source_kind == "volume":
        with as_pipeline_owner(db, pipeline):
            return volume_source.scan(db, pipeline)
    sql = f"WITH enqueued AS ({BatchQueries(pipeline).enqueue_drift} RETURNING 1) " \
          "SELECT count(*) AS n FROM enqueued"
    with as_pipeline_owner(db, pipeline):
        check_owner_can_read(db, pipeline)
        _lock_source(db, pipeline)   # the INSERT below would lock the backlog first
        return db.query(sql)[0]["n"]


def run_worker_batch(db, pipeline, model_loader):
    """One batch for a worker (background or external), which commits after
    it: returns the keys processed, or -1 when the batch failed (recorded in
    the error log; the worker backs off). A view source is reconciled when
    its backlog is empty, so a backfill does not rescan the view per batch."""
    if pipeline.source_kind in ("view", "volume") and _backlog_empty(db, pipeline):
        reconcile(db, pipeline)
    summary = run_pipeline(db, pipeline, model_loader, max_batches=1, progress=False,
                           reconcile_view=False)
    return -1 if summary.error is not None else summary.processed
