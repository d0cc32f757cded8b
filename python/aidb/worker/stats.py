"""Counters of an external worker: for progress output, Prometheus and heartbeats."""

import threading
from collections import defaultdict


class WorkerStats:
    def __init__(self):
        self._lock = threading.Lock()
        self.keys_processed = 0
        self.errors = 0
        self.batches = 0
        self.per_pipeline = defaultdict(lambda: {"keys": 0, "batches": 0, "errors": 0})
        self.last_error = None
        self.listeners = []          # called with (pipeline, stats) after each batch

    def record_batch(self, pipeline, keys):
        with self._lock:
            self.batches += 1
            self.keys_processed += keys
            self.per_pipeline[pipeline]["keys"] += keys
            self.per_pipeline[pipeline]["batches"] += 1
        self._notify(pipeline)

    def record_error(self, pipeline, message):
        with self._lock:
            self.errors += 1
            self.per_pipeline[pipeline]["errors"] += 1
            self.last_error = f"{pipeline}: {message}"
        self._notify(pipeline)

    def _notify(self, pipeline):
        for listener in self.listeners:
            listener(pipeline, self)

    def prometheus(self):
        """The counters in Prometheus' text exposition format."""
        lines = ["# TYPE aidb_worker_keys_processed_total counter",
                 "# TYPE aidb_worker_batches_total counter",
                 "# TYPE aidb_worker_errors_total counter"]
        with self._lock:
            for name, counts in sorted(self.per_pipeline.items()):
                label = name.replace("\\", "\\\\").replace('"', '\\"')
                lines.append(f'aidb_worker_keys_processed_total{{pipeline="{label}"}} {counts["keys"]}')
                lines.append(f'aidb_worker_batches_total{{pipeline="{label}"}} {counts["batches"]}')
                lines.append(f'aidb_worker_errors_total{{pipeline="{label}"}} {counts["errors"]}')
        return "\n".join(lines) + "\n"
