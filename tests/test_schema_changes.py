"""Ordinary migrations and lifecycle events on a pipeline's source,
destination and extension (sql/ext/70_event_triggers.sql): renames are
followed, changes that would corrupt a pipeline are refused with an error
naming it, a dropped source blocks the pipeline visibly, partitions are
captured through their root, NULL keys never break the application's
writes, and DROP EXTENSION leaves nothing behind."""

import psycopg
import pytest

from tests.support.common import TEST_API_KEY
from tests.support.pipeline_checks import (
    assert_consistent, create_docs, create_fake_model, create_pipeline, insert_docs, metrics,
    pipeline_errors, run_pipeline)


def postmaster_pid(conn):
    return conn.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'"
                        ).fetchone()[0]


def registry_columns(conn, name="p"):
    return conn.execute("SELECT source::regclass::oid, source_key_column, source_data_column "
                        "FROM aidb.pipeline_registry WHERE name = %s", (name,)).fetchone()


def test_renamed_columns_table_and_schema_are_followed(conn, fake_model):
    conn.execute("CREATE SCHEMA app")
    conn.execute("SET search_path = app, public")
    create_docs(conn, [(1, "one"), (2, "two")])
    create_pipeline(conn)
    run_pipeline(conn)
    conn.execute("ALTER TABLE docs RENAME COLUMN id TO doc_id")
    conn.execute("ALTER TABLE docs RENAME COLUMN body TO content")
    conn.execute("ALTER TABLE docs RENAME TO articles")
    conn.execute("ALTER SCHEMA app RENAME TO web")
    conn.execute("SET search_path = web, public")
    assert registry_columns(conn) == (
        conn.execute("SELECT 'web.articles'::regclass::oid").fetchone()[0], "doc_id", "content")
    conn.execute("INSERT INTO articles (doc_id, content) VALUES (3, 'three')")
    conn.execute("UPDATE articles SET content = 'ONE' WHERE doc_id = 1")
    conn.execute("DELETE FROM articles WHERE doc_id = 2")
    run_pipeline(conn)
    assert sorted(conn.execute("SELECT source_key, value FROM web.p_embeddings")) == \
        [(1, "ONE"), (3, "three")]


@pytest.mark.parametrize("new_type", ["bigint", "text", "numeric"])
def test_a_key_type_change_is_refused_naming_the_pipeline(conn, fake_model, new_type):
    create_docs(conn, [(1, "one")])
    create_pipeline(conn)
    server = postmaster_pid(conn)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist,
                       match='is the key of pipeline "p"'):
        conn.execute(f"ALTER TABLE docs ALTER COLUMN id TYPE {new_type}")
    assert postmaster_pid(conn) == server
    insert_docs(conn, [(2, "two")])
    run_pipeline(conn)
    assert assert_consistent(conn) == 2


def test_dropping_the_data_column_is_refused(conn, fake_model):
    create_docs(conn, [(1, "one")])
    create_pipeline(conn)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist,
                       match='is the data column of pipeline "p"'):
        conn.execute("ALTER TABLE docs DROP COLUMN body")
    # An unrelated column may go.
    conn.execute("ALTER TABLE docs DROP COLUMN published_time")
    conn.execute("INSERT INTO docs VALUES (2, 'two')")
    run_pipeline(conn)
    assert assert_consistent(conn) == 2


@pytest.mark.parametrize("change", [
    "ALTER TABLE docs RENAME COLUMN flag TO flagged",
    "ALTER TABLE docs DROP COLUMN flag",
    "ALTER TABLE docs ALTER COLUMN flag DROP DEFAULT, ALTER COLUMN flag TYPE int USING 1",
    "ALTER VIEW docs_view RENAME COLUMN flag TO flagged",
])
def test_a_change_that_breaks_the_source_filter_is_refused(conn, fake_model, change):
    """The filter is text (no recorded dependency on the columns it reads):
    a rename, drop or type change that it would no longer parse after is
    refused, naming the pipeline and its filter; nothing changes."""
    create_docs(conn, [(1, "one"), (2, "two")])
    conn.execute("ALTER TABLE docs ADD COLUMN flag boolean DEFAULT true")
    conn.execute("UPDATE docs SET flag = false WHERE id = 2")
    source = "docs"
    if "VIEW" in change:
        source = "docs_view"
        conn.execute("CREATE VIEW docs_view AS SELECT id, body, flag FROM docs")
    create_pipeline(conn, source=source, source_filter="flag", source_key_column="id")
    with pytest.raises(psycopg.errors.DependentObjectsStillExist) as raised:
        conn.execute(change)
    assert raised.value.diag.message_primary.startswith(
        'this change breaks the source_filter of pipeline "p"'), raised.value.diag.message_primary
    assert raised.value.diag.message_detail == "The filter reads: flag"
    assert "aidb.delete_pipeline('p')" in raised.value.diag.message_hint
    assert conn.execute("SELECT count(*) FROM pg_attribute WHERE attrelid = %s::regclass "
                        "AND attname = 'flag' AND atttypid = 'bool'::regtype",
                        (source,)).fetchone() == (1,)
    # A column the filter does not read may still change.
    conn.execute("ALTER TABLE docs RENAME COLUMN published_time TO published")
    run_pipeline(conn)
    assert conn.execute("SELECT source_key FROM p_embeddings").fetchall() == [(1,)]


def test_a_dropped_source_blocks_its_pipeline_visibly(conn, fake_model):
    create_docs(conn, [(1, "one")])
    create_pipeline(conn, auto_processing="Background")
    conn.execute("DROP TABLE docs")
    row = metrics(conn)
    assert (row["auto processing"], row["Status"]) == ("Disabled", "BlockingErrors")
    [(key, category, message)] = pipeline_errors(conn)
    assert (key, category) == (None, "PipelinePermanent")
    assert "docs was dropped" in message and "aidb.delete_pipeline('p')" in message
    conn.execute("SELECT aidb.delete_pipeline('p', drop_destination => true)")
    assert conn.execute("SELECT count(*) FROM aidb.pipelines").fetchone()[0] == 0


def test_partitions_are_captured_through_their_root(conn, fake_model):
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE docs_low PARTITION OF docs FOR VALUES FROM (0) TO (100)")
    conn.execute("INSERT INTO docs VALUES (1, 'one')")
    create_pipeline(conn)
    # Straight into a partition, and into a partition made after the pipeline.
    conn.execute("INSERT INTO docs_low VALUES (2, 'two')")
    conn.execute("CREATE TABLE docs_high PARTITION OF docs FOR VALUES FROM (100) TO (200)")
    conn.execute("INSERT INTO docs_high VALUES (150, 'one fifty')")
    conn.execute("UPDATE docs_high SET body = 'ONE FIFTY'")
    run_pipeline(conn)
    assert assert_consistent(conn) == 3
    conn.execute("TRUNCATE docs_low")
    run_pipeline(conn)
    assert sorted(conn.execute("SELECT source_key, value FROM p_embeddings")) == \
        [(150, "ONE FIFTY")]


def test_a_partition_itself_is_refused_as_a_source(conn, fake_model):
    conn.execute("CREATE TABLE docs (id int PRIMARY KEY, body text) PARTITION BY RANGE (id)")
    conn.execute("CREATE TABLE docs_low PARTITION OF docs FOR VALUES FROM (0) TO (100)")
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="is a partition of"):
        create_pipeline(conn, source="docs_low")


def test_null_keys_never_fail_the_applications_writes(conn, fake_model):
    conn.execute("CREATE TABLE docs (id int UNIQUE, body text)")
    conn.execute("INSERT INTO docs VALUES (1, 'one'), (NULL, 'orphan'), (NULL, 'another')")
    create_pipeline(conn, source_key_column="id")
    conn.execute("UPDATE docs SET body = body || '!'")
    conn.execute("INSERT INTO docs VALUES (NULL, 'third orphan')")
    conn.execute("DELETE FROM docs WHERE id IS NULL AND body = 'orphan!'")
    run_pipeline(conn)
    assert conn.execute("SELECT source_key, value FROM p_embeddings").fetchall() == [(1, "one!")]
    row = metrics(conn)
    assert (row["null keys"], row["count(source records)"], row["Status"]) == (2, 1, "UpToDate")


def test_an_existing_destination_of_the_right_shape_is_reused(conn, fake_model):
    create_docs(conn, [(1, "one"), (2, "two")])
    create_pipeline(conn)
    run_pipeline(conn)
    conn.execute("SELECT aidb.delete_pipeline('p')")
    insert_docs(conn, [(3, "three")])
    conn.execute("DELETE FROM docs WHERE id = 1")
    create_pipeline(conn)
    run_pipeline(conn)
    assert assert_consistent(conn) == 2


def test_drop_extension_refuses_while_pipelines_exist_and_cascade_cleans_up(conn, fake_model,
                                                                            model_server):
    create_docs(conn, [(1, "one")])
    create_pipeline(conn)
    with pytest.raises(psycopg.errors.DependentObjectsStillExist):
        conn.execute("DROP EXTENSION aidb")
    conn.execute("DROP EXTENSION aidb CASCADE")
    assert conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'docs'::regclass"
                        ).fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = 'aidb'").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM pg_proc f JOIN pg_namespace n "
                        "ON n.oid = f.pronamespace WHERE n.nspname = 'aidb'").fetchone()[0] == 0
    # The source works on its own, and aidb can come back with a new pipeline.
    conn.execute("DELETE FROM docs")
    conn.execute("ALTER TABLE docs ALTER COLUMN id TYPE text")
    conn.execute("CREATE EXTENSION aidb")
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    insert_docs(conn, [("a", "alpha")])
    create_pipeline(conn, destination="p2_embeddings")
    run_pipeline(conn)
    assert conn.execute("SELECT source_key, value FROM p2_embeddings").fetchall() == [("a", "alpha")]
