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


def test_after_a_restore_drop_extension_still_refuses_and_cascade_removes_everything(
        cluster, dbname, conn, restored_dbname):
    """pg_dump carries a pipeline's backlog, state and functions but not
    their dependency on the extension; the restore records it again
    (aidb._depend_restored_objects). A Live and a view pipeline have no
    trigger on an extension function that would refuse the drop on its own."""
    conn.execute("CREATE TABLE t (id int PRIMARY KEY, body text)")
    conn.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
    conn.execute("CREATE VIEW v AS SELECT id, body FROM t")
    for name, source, mode in (("live", "t", "Live"), ("view", "v", "Disabled")):
        conn.execute("SELECT aidb.create_pipeline(%s, %s, source_key_column => 'id', "
                     "source_data_column => 'body', step_1 => 'ChunkText', "
                     "step_1_options => aidb.chunk_text_config(10), auto_processing => %s)",
                     (name, source, mode))
    pg_tool(cluster, "psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", restored_dbname,
            stdin=pg_tool(cluster, "pg_dump", dbname))
    with psycopg.connect(cluster.dsn(restored_dbname), autocommit=True) as restored:
        # Every function works after the restore.
        restored.execute("INSERT INTO t VALUES (3, 'three')")
        restored.execute("SELECT aidb.run_pipeline('view')")
        for name in ("live", "view"):
            assert restored.execute(f"SELECT count(DISTINCT source_key) FROM {name}_embeddings"
                                    ).fetchone() == (3,)
        with pytest.raises(psycopg.errors.DependentObjectsStillExist) as refused:
            restored.execute("DROP EXTENSION aidb")
        detail = refused.value.diag.message_detail
        for pipeline_id in (1, 2):
            for table in ("_backlog", "_state"):
                assert f"table aidb.{table}_{pipeline_id} depends on extension aidb" in detail
            assert f"function aidb._source_{pipeline_id}(" in detail
        assert refused.value.diag.message_hint.startswith("Use DROP ... CASCADE")
        restored.execute("DROP EXTENSION aidb CASCADE")
        assert restored.execute(
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'aidb'::regnamespace), "
            "(SELECT count(*) FROM pg_proc WHERE pronamespace = 'aidb'::regnamespace), "
            "(SELECT count(*) FROM pg_trigger WHERE tgrelid = 't'::regclass)").fetchone() == (0, 0, 0)
        # The destinations stay: they are the owner's data.
        assert restored.execute("SELECT count(*) FROM live_embeddings").fetchone() == (3,)
        restored.execute("DELETE FROM t WHERE id = 1")      # the source works on its own
