"""Draining a pipeline's backlog: run_pipeline (all pending work now, in the
caller's transaction) and drift reconciliation. Workers run their batches
pipelined (pipelined.py), with this module's bookkeeping.

Each batch runs in a savepoint. When the provider is down (after the model
layer's own retries) or the configuration is broken, the savepoint is rolled
back — the batch's keys are back in the backlog — the error is recorded for
aidb.pipeline_errors / aidb.pipem, and draining stops.
"""

import collections
import threading
import time
from dataclasses import dataclass

from ..errors import AidbError, ModelError, PIPELINE_PERMANENT, PIPELINE_TEMPORARY
from . import error_log, guard, volume_source
from .batch import ClaimCursor, SourceBusy, run_batch
from .queries import batch_queries
from .source import check_owner_can_read
from .vector_index import ensure_vector_index
from ..sqltext import sql

PROGRESS_EVERY_SECONDS = 5.0


@dataclass
class RunSummary:
    processed: int = 0
    embedded: int = 0
    removed: int = 0
    failed: int = 0
    busy: int = 0
    seconds: float = 0.0
    error: ModelError | None = None

    @property
    def rate(self):
        return self.processed / self.seconds if self.seconds > 0 else None


def run_pipeline(db, pipeline, model_loader, max_batches=None, progress=True, reconcile_view=True,
                 cursor=None):
    """Process pending work until the backlog is empty (or only holds keys
    that other transactions hold), or a batch fails. Whoever calls it, the
    owner's SQL runs only inside the owner's own functions (batch.py), so a
    superuser running someone's pipeline lends it no rights. `cursor` (a
    worker's, kept between its batches) says where claims continue."""
    started = time.monotonic()
    summary = RunSummary()
    try:
        guard.check_pipeline_objects(db, pipeline)
        check_owner_can_read(db, pipeline)
    except AidbError as exc:
        summary.error, summary.seconds = exc, time.monotonic() - started
        error_log.record_pipeline_error(db, pipeline.id, "source", PIPELINE_PERMANENT, exc.message)
        _save_stats(db, pipeline, summary)
        return summary
    if pipeline.source_type in ("view", "volume") and reconcile_view:
        reconcile(db, pipeline)
    hold_source = max_batches is None and pipeline.source_type != "volume"
    if hold_source:
        db.execute(batch_queries(pipeline).hold_source)
    pending = _pending(db, pipeline) if progress else 0
    cursor = cursor or ClaimCursor()
    batches, last_report, rewound, last_claimed = 0, started, False, None
    while max_batches is None or batches < max_batches:
        try:
            with db.savepoint():
                result = run_batch(db, pipeline, model_loader, cursor, wait_for_source=hold_source)
        except (ModelError, SourceBusy) as exc:
            summary.error = exc
            _record_failure(db, pipeline, exc)
            break
        last_claimed = result.claimed
        if not result.claimed:
            # Once per run, go back to the first page: rows may have landed
            # before the cursor. More would loop on keys others hold.
            if not rewound and cursor.rewind():
                rewound = True
                continue
            break
        if result.busy and not result.processed:
            break                   # only keys whose rows another transaction holds
        batches += 1
        for name in ("processed", "embedded", "removed", "failed", "busy"):
            setattr(summary, name, getattr(summary, name) + getattr(result, name))
        if progress and time.monotonic() - last_report >= PROGRESS_EVERY_SECONDS:
            last_report = time.monotonic()
            _report(db, pipeline, summary, pending, last_report - started)
    summary.seconds = time.monotonic() - started
    if summary.error is None and summary.processed:
        error_log.clear_pipeline_errors(db, pipeline.id)
    # Once the (initial) backlog is drained. Asked only after a short claim:
    # the emptiness check scans the backlog's emptied pages, a cost that grows
    # with what a backfill drained if paid after every full batch.
    drained = last_claimed is not None and last_claimed < pipeline.batch_size
    if summary.error is None and drained and _backlog_empty(db, pipeline):
        ensure_vector_index(db, pipeline)
    _save_stats(db, pipeline, summary, wait=max_batches is None)
    return summary


def _pending(db, pipeline):
    return db.query(batch_queries(pipeline).pending_keys)[0]["n"]


def _backlog_empty(db, pipeline):
    return db.query(batch_queries(pipeline).backlog_empty)[0]["empty"]


def _report(db, pipeline, summary, pending, elapsed):
    db.notice(f'pipeline "{pipeline.name}": {summary.processed} of ~{pending} keys processed '
              f"({summary.processed / elapsed:.0f} keys/s)")


def _record_failure(db, pipeline, exc):
    category = PIPELINE_PERMANENT if exc.category == PIPELINE_PERMANENT else PIPELINE_TEMPORARY
    step = "read" if isinstance(exc, SourceBusy) else "KnowledgeBase"
    error_log.record_pipeline_error(db, pipeline.id, step, category, exc.message)


_SAVE_STATS = """
    INSERT INTO aidb.pipeline_run_stats (pipeline_id, last_run, keys_processed, last_rate, last_error)
    VALUES (%s, pg_catalog.now(), %s, %s, %s)
    ON CONFLICT (pipeline_id) DO UPDATE
    SET last_run = EXCLUDED.last_run,
        keys_processed = pipeline_run_stats.keys_processed + EXCLUDED.keys_processed,
        last_rate = coalesce(EXCLUDED.last_rate, pipeline_run_stats.last_rate),
        last_error = EXCLUDED.last_error"""

# Workers must not queue behind each other on the pipeline's one stats row
# (every batch would commit single file): a worker that finds it locked
# carries its counts over to its next batch instead.
_SAVE_STATS_IF_FREE = """
    WITH free AS (
        SELECT pipeline_id FROM aidb.pipeline_run_stats
        WHERE pipeline_id = %s FOR UPDATE SKIP LOCKED),
    updated AS (
        UPDATE aidb.pipeline_run_stats s
        SET last_run = pg_catalog.now(), keys_processed = s.keys_processed + %s,
            last_rate = coalesce(%s, s.last_rate), last_error = %s
        FROM free WHERE s.pipeline_id = free.pipeline_id
        RETURNING 1),
    inserted AS (
        INSERT INTO aidb.pipeline_run_stats (pipeline_id, last_run, keys_processed, last_rate, last_error)
        SELECT %s, pg_catalog.now(), %s, %s, %s
        WHERE NOT EXISTS (SELECT FROM aidb.pipeline_run_stats WHERE pipeline_id = %s)
        ON CONFLICT (pipeline_id) DO NOTHING
        RETURNING 1)
    SELECT EXISTS (SELECT FROM updated) OR EXISTS (SELECT FROM inserted) AS saved"""

_unsaved_keys = collections.Counter()      # per (database, pipeline id): counts not written yet
_unsaved_lock = threading.Lock()           # external workers run slots in threads


def _save_stats(db, pipeline, summary, wait=True):
    """Add the run's figures to aidb.pipeline_run_stats; without `wait`
    (workers), only if no other transaction holds the row right now."""
    unsaved = (db.database_identity, pipeline.id)
    with _unsaved_lock:
        processed = summary.processed + _unsaved_keys.pop(unsaved, 0)
    values = (pipeline.id, processed, summary.rate,
              summary.error.message if summary.error else None)
    if wait:
        db.execute(_SAVE_STATS, *values)
    elif not db.query(_SAVE_STATS_IF_FREE, *values, *values, pipeline.id)[0]["saved"]:
        with _unsaved_lock:
            _unsaved_keys[unsaved] += processed


def reconcile(db, pipeline):
    """Enqueue every key whose source content differs from what the
    destination was built from; returns how many were found. For a volume,
    that is a scan of it. The source is read by the owner's function."""
    if pipeline.source_type == "volume":
        return volume_source.scan(db, pipeline)
    guard.check_pipeline_objects(db, pipeline)
    check_owner_can_read(db, pipeline)
    statement = sql("WITH enqueued AS ({enqueue} RETURNING 1) "
                    "SELECT pg_catalog.count(*) AS n FROM enqueued",
                    enqueue=batch_queries(pipeline).enqueue_drift)
    return db.query(statement)[0]["n"]
