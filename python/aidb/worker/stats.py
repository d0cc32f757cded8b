"""Counters of an external worker: for progress bars, Prometheus metrics
(worker/metrics.py) and heartbeats."""

import threading
import time
from collections import defaultdict

# The pending count is a count(DISTINCT key) over the backlog: cheap, but not
# something to run after every batch of a million-row backfill.
PENDING_EVERY_SECONDS = 1.0



class WorkerStats:
    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.keys_processed = 0
        self.errors = 0
        self.batches = 0
        # pending: keys left in the backlog when last counted (None: not counted)
        self.per_pipeline = defaultdict(lambda: {"keys": 0, "batches": 0, "errors": 0,
                                                 "pending": None})
        self.listeners = []          # called with (pipeline, stats) after each batch
        self.wants_pending = False   # set by a progress display or the metrics server
        self._pending_counted = {}   # pipeline -> time.monotonic() of its last count

    def pending_due(self, pipeline, idle):
        """Whether to count `pipeline`'s backlog now: when someone shows it,
        after an idle batch (so that a drained backlog shows 0) or once a second."""
        if not self.wants_pending:
            return False
        now = time.monotonic()
        with self._lock:
            if not idle and now - self._pending_counted.get(pipeline, -1e9) < PENDING_EVERY_SECONDS:
                return False
            self._pending_counted[pipeline] = now
            return True

    def record_batch(self, pipeline, keys, pending=None):
        with self._lock:
            self.batches += 1
            self.keys_processed += keys
            counts = self.per_pipeline[pipeline]
            counts["keys"] += keys
            counts["batches"] += 1
            if pending is not None:
                counts["pending"] = pending
            elif counts["pending"] is not None:
                # Not counted this time: keep processed + pending steady.
                counts["pending"] = max(0, counts["pending"] - keys)
        self._notify(pipeline)

    def record_error(self, pipeline, pending=None):
        with self._lock:
            self.errors += 1
            counts = self.per_pipeline[pipeline]
            counts["errors"] += 1
            if pending is not None:
                counts["pending"] = pending
        self._notify(pipeline)

    def snapshot(self):
        """{pipeline: counts} copied under the lock, for displays."""
        with self._lock:
            return {name: dict(counts) for name, counts in sorted(self.per_pipeline.items())}

    def _notify(self, pipeline):
        for listener in self.listeners:
            listener(pipeline, self)
