"""The SQL of a pipeline's batches, built in one place (aidb.sqltext) from the
pipeline's quoted names (docs/architecture.md, "The batch protocol").

Keys travel in their own type: every key parameter is cast to the key's
base type and compared with the type's own equality operator, named with
its schema. Statements that touch what the pipeline owner controls call the
owner's SECURITY DEFINER functions (aidb._source_<id>, ...); the others read
and write aidb's own backlog and state tables. Every entry point runs with
search_path = pg_catalog, pg_temp, and every name here is qualified anyway.
"""

from ..sqltext import sql

# The smallest tid: claims start there and continue after the last one taken.
FIRST_TID = "(0,0)"


class BatchQueries:
    """Statements for one pipeline; each uses %s parameters."""

    def __init__(self, pipeline):
        p = pipeline
        names = {"backlog": p.backlog, "state": p.state, "kt": p.key_type_name, "eq": p.equals}
        self.state_table = p.state.text        # as a regclass parameter

        def q(template):
            return sql(template, **names)

        # Up to batch_size backlog rows after the tid where the last claim
        # stopped: a TID range scan, so a claim costs the same however many
        # rows this transaction has claimed (and deleted) before.
        self.claim = q("""
            SELECT ctid::pg_catalog.text AS tid, key FROM {backlog}
            WHERE ctid OPERATOR(pg_catalog.>) %s::pg_catalog.tid
            LIMIT %s FOR UPDATE SKIP LOCKED""")
        # A key's lock is the row lock on its state row: row locks live in the
        # tuples, so a run holds any number of them without touching the lock
        # table. New keys get their row first (a NULL hash: nothing built yet);
        # a batch does not wait for another transaction adding the same key,
        # Live (inside the writer's transaction) does.
        self.add_state_rows = q("SELECT aidb._add_state_rows(%s::pg_catalog.regclass, %s::{kt}[])")
        self.add_state_rows_waiting = q("""
            INSERT INTO {state} (key)
            SELECT u.k FROM pg_catalog.unnest(%s::{kt}[]) AS u(k) ORDER BY 1
            ON CONFLICT DO NOTHING""")
        self.lock_keys = q("""
            SELECT key, hash::pg_catalog.text AS hash FROM {state}
            WHERE key {eq} ANY (%s::{kt}[]) FOR UPDATE SKIP LOCKED""")
        self.lock_keys_waiting = q("""
            SELECT key, hash::pg_catalog.text AS hash FROM {state}
            WHERE key {eq} ANY (%s::{kt}[]) FOR UPDATE""")
        self.delete_claimed = q("""
            DELETE FROM {backlog} WHERE ctid OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.tid[])""")
        # The key list twice: `st.key = ANY (keys)` makes the state table's
        # primary key the way in. A plain join to the unnest was planned, in
        # a run's one transaction (no statistics yet), as a hash join over
        # a seq scan of the whole state table: quadratic in the backlog.
        self.remember_state = q("""
            UPDATE {state} AS st SET hash = u.h::pg_catalog.uuid, updated_at = pg_catalog.now()
            FROM ROWS FROM (pg_catalog.unnest(%s::{kt}[]), pg_catalog.unnest(%s::pg_catalog.text[])) AS u(k, h)
            WHERE st.key {eq} ANY (%s::{kt}[]) AND st.key {eq} u.k""")
        self.forget_state = q("DELETE FROM {state} WHERE key {eq} ANY (%s::{kt}[])")
        self.requeue = q("INSERT INTO {backlog} (key) SELECT pg_catalog.unnest(%s::{kt}[])")
        self.pending_keys = q("SELECT pg_catalog.count(DISTINCT key) AS n FROM {backlog}")
        # O(1), unlike the count: what a worker asks after every batch.
        self.backlog_empty = q("SELECT NOT EXISTS (SELECT FROM {backlog}) AS empty")
        self.write_destination = sql("""
            SELECT {destination}(%s::{kt}[], %s::{kt}[], %s::pg_catalog.int4[],
                                 %s::pg_catalog.text[], %s::pg_catalog.bytea[]) AS busy""",
                                     destination=p.owner_function("destination"), **names)
        if p.source_type == "volume":
            return
        names.update(source=p.source_name, read=p.owner_function("source"),
                     drift=p.owner_function("drift"), all_keys=p.owner_function("all_keys"))
        # Taken without waiting, inside a savepoint that is rolled back once the
        # rows are read: no lock on the source is held while a model is called,
        # and a batch never waits behind DDL (which would wait behind it).
        self.lock_source = q("LOCK TABLE {source} IN ACCESS SHARE MODE NOWAIT")
        # run_pipeline instead holds the source from its start to its end, as
        # any reader in the caller's transaction would: a run of many batches
        # in one transaction that took the source only after claiming keys
        # would deadlock with TRUNCATE (source, then backlog in its trigger).
        self.hold_source = q("LOCK TABLE {source} IN ACCESS SHARE MODE")
        self.read_source = q("""
            SELECT s.key, s.data,
                   pg_catalog.md5(s.data)::pg_catalog.uuid::pg_catalog.text AS hash
            FROM {read}(%s::{kt}[]) AS s""")
        self.enqueue_drift = q("""
            INSERT INTO {backlog} (key)
            SELECT coalesce(s.key, st.key)
            FROM {drift}() AS s FULL JOIN {state} AS st ON st.key {eq} s.key
            WHERE s.hash IS DISTINCT FROM st.hash""")
        self.enqueue_all = q("INSERT INTO {backlog} (key) SELECT k FROM {all_keys}() AS k")
