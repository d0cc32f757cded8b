"""Prometheus metrics of an external worker, served by prometheus-client on
HOST:PORT/metrics (127.0.0.1 unless told otherwise, e.g. 0.0.0.0 in a
container): the worker's per-pipeline counters, read from its WorkerStats at
each scrape, and the process_* and python_* metrics every exporter has."""

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client import start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

# metric -> (kind, WorkerStats field, help). prometheus-client adds the
# counters' _total suffix.
_SERIES = {
    "aidb_worker_keys_processed": (CounterMetricFamily, "keys", "Source keys processed."),
    "aidb_worker_batches": (CounterMetricFamily, "batches", "Batches committed by this worker."),
    "aidb_worker_errors": (CounterMetricFamily, "errors", "Batches that failed."),
    "aidb_worker_pending_keys": (GaugeMetricFamily, "pending", "Keys left in the backlog."),
}


class WorkerCollector:
    """The counters of one WorkerStats, per pipeline, as of the scrape."""

    def __init__(self, stats):
        self.stats = stats

    def collect(self):
        snapshot = self.stats.snapshot()
        for metric, (family, field, text) in _SERIES.items():
            samples = family(metric, text, labels=["pipeline"])
            for pipeline, counts in snapshot.items():
                if counts[field] is not None:      # pending: not counted yet
                    samples.add_metric([pipeline], counts[field])
            yield samples


def metrics_registry(stats):
    """A registry of this worker's metrics (not the library's global one, so
    that several Workers in one process, or tests, do not collide)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    registry.register(WorkerCollector(stats))
    return registry


def serve_metrics(stats, port, host="127.0.0.1"):
    """Serve `stats` on HOST:PORT/metrics from a daemon thread; returns the server."""
    stats.wants_pending = True     # the backlog gauge
    server, _thread = start_http_server(port, addr=host, registry=metrics_registry(stats))
    return server
