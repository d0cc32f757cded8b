"""pg_dump and restore: a database with aidb comes back with its models,
their credentials, its pipelines, their capture triggers and their pending
work (docs/architecture.md, "Decisions where the brief is silent": dumps carry
user data, not defaults)."""

import os
import subprocess

import psycopg
import pytest

from pgcluster import PG_BIN
from tests.support.common import TEST_API_KEY, scratch_database
from tests.support.pipeline_checks import (
    MODEL, assert_consistent, create_docs, create_fake_model, create_pipeline, insert_docs,
    metrics, pending, run_pipeline)
from tests.support.writers import numbered_docs


def pg_tool(cluster, program, *args, stdin=None):
    """Run a PostgreSQL client program against the cluster; its stdout."""
    result = subprocess.run(
        [os.path.join(PG_BIN, program), "-h", "127.0.0.1", "-p", str(cluster.port),
         "-U", "postgres", *args], input=stdin, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.fixture
def restored_dbname(cluster):
    """An empty database (no aidb yet) for the restore, dropped afterwards."""
    with scratch_database(cluster, "r_") as name:
        yield name


@pytest.mark.smoke
def test_dump_and_restore_keep_pipelines_and_their_pending_work(cluster, dbname, conn,
                                                                 restored_dbname, model_server):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, numbered_docs(range(1, 11)))
    create_pipeline(conn, batch_size=4)
    run_pipeline(conn)
    insert_docs(conn, numbered_docs(range(11, 14), prefix="queued before the dump"))
    dump = pg_tool(cluster, "pg_dump", dbname)
    assert TEST_API_KEY in dump          # credentials are user data: they travel with the dump

    pg_tool(cluster, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", restored_dbname,
            stdin=dump)
    with psycopg.connect(cluster.dsn(restored_dbname), autocommit=True) as restored:
        assert restored.execute("SELECT name FROM aidb.models WHERE name = %s",
                                (MODEL,)).fetchone() is not None
        assert pending(restored) == 3
        # The capture triggers came back with the table: a write is queued.
        insert_docs(restored, numbered_docs(range(14, 16), prefix="written after the restore"))
        restored.execute("DELETE FROM docs WHERE id = 1")
        assert pending(restored) == 6
        run_pipeline(restored)       # needs the restored credentials (the server checks the key)
        assert metrics(restored)["Status"] == "UpToDate"
        assert assert_consistent(restored) == 14
        # The id sequence came back too: a new pipeline gets a new id.
        restored.execute("CREATE TABLE more_docs (id int PRIMARY KEY, body text)")
        restored.execute("INSERT INTO more_docs VALUES (1, 'after the restore')")
        create_pipeline(restored, "p2", source="more_docs")
        run_pipeline(restored, "p2")
        assert assert_consistent(restored, "p2") == 1
        assert assert_consistent(restored) == 14
