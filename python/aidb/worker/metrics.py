"""Prometheus metrics of an external worker, served on HOST:PORT/metrics
(127.0.0.1 unless told otherwise, e.g. 0.0.0.0 in a container)."""

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve_metrics(stats, port, host="127.0.0.1"):
    """Start the metrics server in a daemon thread; returns the server."""
    stats.wants_pending = True     # the backlog gauge

    class MetricsHandler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = stats.prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer((host, port), MetricsHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="aidb-metrics").start()
    return server
