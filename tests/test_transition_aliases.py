"""Source columns named like the capture function's transition-table
aliases (n, o) must not make the application's writes fail (found by the
property tests: "column reference n is ambiguous")."""

from tests.support.common import TEST_API_KEY
def test_columns_named_like_the_transition_aliases(conn):
    conn.execute('CREATE TABLE t (n int PRIMARY KEY, o text, body text)')
    conn.execute("INSERT INTO t VALUES (1, 'x', 'one')")
    conn.execute("SELECT aidb.create_pipeline('p', 't', source_data_column => 'body', step_1 => 'ChunkText', "
                 "step_1_options => aidb.chunk_text_config(50), source_filter => 'o IS NOT NULL')")
    conn.execute("UPDATE t SET o = 'y'")
    conn.execute("UPDATE t SET n = 2")
    conn.execute("SELECT aidb.run_pipeline('p')")
    assert conn.execute("SELECT source_key, value FROM p_embeddings").fetchall() == [(2, 'one')]
