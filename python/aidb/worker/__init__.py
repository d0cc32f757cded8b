"""The external worker: the engine outside PostgreSQL, over psycopg.

    aidb worker -d postgresql://... [-i PIPELINE ...] [--poll-interval 5m] [-c N] [--once]

or, inside an application:

    worker = aidb.Worker(db_url, pipelines=["docs"], concurrency=2)
    await worker.run()                      # until request_graceful_shutdown()
"""

from .worker import Worker

__all__ = ["Worker"]
