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
from .worker import Worker, WorkerError


def build_parser():
    parser = argparse.ArgumentParser(prog="aidb", description="aidb's external worker")
    parser.add_argument("--version", action="version", version=f"aidb {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    worker = commands.add_parser("worker", help="process Background pipelines from outside PostgreSQL")
    worker.add_argument("-d", "--db-url", default=env("DB_URL"),
                        help="PostgreSQL URL (env AIDB_WORKER_DB_URL)")
    worker.add_argument("-i", "--pipeline", action="append", dest="pipelines",
                        help="serve only this pipeline; repeatable (env AIDB_WORKER_PIPELINE, "
                             "comma-separated; default: every Background pipeline)")
    worker.add_argument("--poll-interval", default=env("POLL_INTERVAL", "5m"),
                        help="wait between passes when idle: seconds or 45s, 5m, 1h (default 5m)")
    worker.add_argument("-c", "--concurrency", type=int, default=int(env("CONCURRENCY", "1")),
                        help="batches processed at once (default 1)")
    worker.add_argument("--once", action="store_true",
                        default=env("ONCE", "").lower() in ("1", "true", "yes"),
                        help="drain what is pending and exit; nonzero exit status on errors")
    worker.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"),
                        choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    worker.add_argument("--metrics-port", type=int,
                        default=int(env("METRICS_PORT")) if env("METRICS_PORT") else None,
                        help="serve Prometheus metrics on 127.0.0.1:PORT/metrics")
    return parser


def main(argv=None):
    load_dotenv()
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not args.db_url:
        parser.error("no database: pass -d/--db-url or set AIDB_WORKER_DB_URL")
    try:
        poll_interval = parse_duration(args.poll_interval)
    except ValueError as exc:
        parser.error(f"--poll-interval: {exc}")
    pipelines = args.pipelines or [p for p in (env("PIPELINE") or "").split(",") if p]
    worker = Worker(args.db_url, pipelines=pipelines, poll_interval=poll_interval,
                    concurrency=args.concurrency, once=args.once)
    if sys.stderr.isatty():
        attach_progress(worker.stats)
    if args.metrics_port:
        serve_metrics(worker.stats, args.metrics_port)
    return asyncio.run(_run(worker))


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
