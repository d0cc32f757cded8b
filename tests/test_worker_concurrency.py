"""External workers scale: `-c N` runs N batches at once, and workers never
queue behind each other on the pipeline's statistics row."""

import asyncio
import threading

import psycopg

from tests.support.common import TEST_API_KEY, scratch_database, wait_for
from tests.support.pipeline_checks import (
    assert_consistent, create_docs, create_fake_model, create_pipeline, insert_docs)

import aidb


def stats_keys(conn):
    row = conn.execute("SELECT keys_processed FROM aidb.pipeline_run_stats s "
                       "JOIN aidb.pipeline_registry p ON p.id = s.pipeline_id "
                       "WHERE p.name = 'p'").fetchone()
    return row[0] if row else 0


def test_concurrency_runs_that_many_batches_at_once(cluster, dbname, conn, model_server):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(n, f"document {n}") for n in range(1, 81)])
    create_pipeline(conn, batch_size=5)
    model_server.set_latency(300)
    peak = [0]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], model_server.state()["in_flight"])
            done.wait(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        worker = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], concurrency=8, once=True)
        assert asyncio.run(worker.run()) == 0
    finally:
        done.set()
        watcher.join()
    # More than asyncio's default pool (cores + 4 = 6 here) at once.
    assert peak[0] >= 7, f"at most {peak[0]} requests were in flight with -c 8"
    assert assert_consistent(conn) == 80


def test_a_locked_stats_row_delays_no_batch(cluster, dbname, conn, connect, model_server):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(n, f"document {n}") for n in range(1, 21)])
    create_pipeline(conn, batch_size=5)
    conn.execute("SELECT aidb.run_pipeline('p')")
    counted = stats_keys(conn)
    holder = connect()
    with holder.transaction():
        holder.execute("SELECT * FROM aidb.pipeline_run_stats FOR UPDATE")
        insert_docs(conn, [(n, f"new {n}") for n in range(21, 31)])
        worker = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], once=True)
        # Drains while another transaction holds the stats row.
        assert asyncio.run(asyncio.wait_for(worker.run(), timeout=60)) == 0
        assert assert_consistent(conn) == 30
    # The counts it could not write are written with its next batch.
    insert_docs(conn, [(31, "thirty-one")])
    worker = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], once=True)
    assert asyncio.run(worker.run()) == 0
    wait_for(lambda: stats_keys(conn) == counted + 11, message="the carried counts")


def test_counts_carried_for_one_database_are_not_written_to_another(cluster, dbname, conn,
                                                                    connect, model_server):
    """Pipelines of different databases share ids (each registry counts from
    1): counts a worker could not write in one are never added in the other."""
    with scratch_database(cluster, "t_", template="aidb_template") as other_name:
        with psycopg.connect(cluster.dsn(other_name), autocommit=True) as other:
            for database in (conn, other):
                create_fake_model(database, model_server.url, TEST_API_KEY)
                create_docs(database, [(n, f"document {n}") for n in range(1, 6)])
                create_pipeline(database, batch_size=5)
                database.execute("SELECT aidb.run_pipeline('p')")
            assert pipeline_ids(conn) == pipeline_ids(other)
            holder = connect()
            with holder.transaction():
                holder.execute("SELECT * FROM aidb.pipeline_run_stats FOR UPDATE")
                insert_docs(conn, [(n, f"new {n}") for n in range(6, 11)])
                worker = aidb.Worker(cluster.dsn(dbname), pipelines=["p"], once=True)
                assert asyncio.run(worker.run()) == 0       # 5 keys counted, not written
            insert_docs(other, [(11, "eleven")])
            worker = aidb.Worker(cluster.dsn(other_name), pipelines=["p"], once=True)
            assert asyncio.run(worker.run()) == 0
            wait_for(lambda: stats_keys(other) == 6, message="the other database's own counts")
            assert stats_keys(other) == 6


def pipeline_ids(database):
    return database.execute("SELECT id FROM aidb.pipeline_registry ORDER BY id").fetchall()
