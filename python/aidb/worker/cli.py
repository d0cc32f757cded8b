"""`aidb worker`: the external worker's command line.

Every option can also come from an AIDB_WORKER_* environment variable or a
.env file in the current directory. SIGINT and SIGTERM shut down gracefully:
the batches in flight finish, nothing is lost.
"""

import argparse
import asyncio
import logging
import signal
import sys

from .. import __version__
from .metrics import serve_metrics
from .progress import attach_progress
from .settings import env, load_dotenv, parse_duration
from ..pipeline.pipelined import DEFAULT_BATCHES_IN_FLIGHT, MAX_BATCHES_IN_FLIGHT
from .worker import Worker, WorkerError


def build_parser():
    # String defaults from the environment go through `type` like arguments,
    # so a bad AIDB_WORKER_* value gets the same one-line usage error.
    parser = argparse.ArgumentParser(prog="aidb", description="aidb's external worker")
    parser.add_argument("--version", action="version", version=f"aidb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker",
                                 help="process Background pipelines from outside PostgreSQL")
    worker.add_argument("-d", "--db-url", default=env("DB_URL"),
                        help="PostgreSQL URL (env AIDB_WORKER_DB_URL)")
    worker.add_argument("-i", "--pipeline", action="append", dest="pipelines", metavar="PIPELINE",
                        help="serve only this pipeline; repeatable (env AIDB_WORKER_PIPELINE, "
                             "comma-separated; default: every Background pipeline)")
    worker.add_argument("--poll-interval", type=_duration, default=env("POLL_INTERVAL", "5m"),
                        help="wait between passes when idle: seconds or 45s, 5m, 1h (default 5m)")
    worker.add_argument("-c", "--concurrency", type=_positive_int,
                        default=env("CONCURRENCY", "1"),
                        help="batches processed at once (default 1)")
    worker.add_argument("--batches-in-flight", type=_batches_in_flight,
                        default=env("BATCHES_IN_FLIGHT", str(DEFAULT_BATCHES_IN_FLIGHT)),
                        help="batches per slot and pipeline waiting for the model while the "
                             f"oldest is written: hides model latency (default "
                             f"{DEFAULT_BATCHES_IN_FLIGHT}, at most {MAX_BATCHES_IN_FLIGHT}; "
                             "1: one batch at a time)")
    worker.add_argument("--once", action="store_true",
                        default=env("ONCE", "").lower() in ("1", "true", "yes", "on"),
                        help="drain what is pending and exit; nonzero exit status on errors")
    worker.add_argument("--log-level", type=str.upper, default=env("LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    worker.add_argument("--metrics-port", type=_positive_int, default=env("METRICS_PORT"),
                        help="serve Prometheus metrics on HOST:PORT/metrics")
    worker.add_argument("--metrics-host", default=env("METRICS_HOST", "127.0.0.1"),
                        help="address of the metrics server (default 127.0.0.1; "
                             "0.0.0.0 in a container)")
    return parser


def _duration(text):
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text):
    if not str(text).strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return int(text)


def _batches_in_flight(text):
    """A positive integer up to MAX_BATCHES_IN_FLIGHT, refused by argparse
    like any bad argument (the environment's value too)."""
    value = _positive_int(text)
    if value > MAX_BATCHES_IN_FLIGHT:
        raise argparse.ArgumentTypeError(f"at most {MAX_BATCHES_IN_FLIGHT}, not {value}")
    return value


def main(argv=None):
    load_dotenv()
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.log_level)
    if not args.db_url:
        parser.error("no database: pass -d/--db-url or set AIDB_WORKER_DB_URL")
    pipelines = args.pipelines or [name.strip() for name in (env("PIPELINE") or "").split(",")
                                   if name.strip()]
    worker = Worker(args.db_url, pipelines=pipelines, poll_interval=args.poll_interval,
                    concurrency=args.concurrency, once=args.once,
                    batches_in_flight=args.batches_in_flight)
    if args.metrics_port:
        serve_metrics(worker.stats, args.metrics_port, args.metrics_host)
    display = attach_progress(worker.stats) if sys.stderr.isatty() else None
    try:
        return asyncio.run(_run(worker))
    finally:
        if display:
            display.stop()


def _configure_logging(level):
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if level != "DEBUG":
        # One INFO line per HTTP request would drown the worker's own lines.
        logging.getLogger("httpx").setLevel(logging.WARNING)


async def _run(worker):
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, worker.shutdown)
    try:
        return await worker.run()
    except WorkerError as exc:
        print(f"aidb worker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
