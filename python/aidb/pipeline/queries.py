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
from .leases import LIVE_TOKENS

# The smallest tid: claims start there and continue after the last one taken.
FIRST_TID = "(0,0)"
# batch_queries' statements, by pipeline shape; cleared when it holds this many.
_built = {}
_BUILT_LIMIT = 512


def batch_queries(pipeline):
    """The BatchQueries of `pipeline`, built once per pipeline shape: a worker
    asks for them several times a batch, and composing them each time was
    5 % of an external worker's Python (bench/profile_drain.py). The key is
    everything the statements are built from, so a renamed source gets new
    ones. Read-only once built: threads share them."""
    shape = (pipeline.id, pipeline.source_type, pipeline.source, pipeline.key_type,
             pipeline.key_equals)
    queries = _built.get(shape)
    if queries is None:
        if len(_built) >= _BUILT_LIMIT:
            _built.clear()
        queries = _built[shape] = BatchQueries(pipeline)
    return queries


class BatchQueries:
    """Statements for one pipeline; each uses %s parameters."""

    def __init__(self, pipeline):
        p = pipeline
        names = {"backlog": p.backlog, "state": p.state, "kt": p.key_type_name, "eq": p.equals,
                 "live": LIVE_TOKENS}
        self.state_table = p.state.text        # as a regclass parameter

        def q(template):
            return sql(template, **names)

        # Up to batch_size backlog rows after the tid where the last claim
        # stopped: a TID range scan, so a claim costs the same however many
        # rows this transaction has claimed (and deleted) before. The xmin
        # names the row version: a pipelined batch deletes its rows in a later
        # transaction, when a TRUNCATE may have let a newer row take the tid.
        self.claim = q("""
            SELECT ctid::pg_catalog.text AS tid, xmin::pg_catalog.text AS xmin, key FROM {backlog}
            WHERE ctid OPERATOR(pg_catalog.>) %s::pg_catalog.tid
            LIMIT %s FOR UPDATE SKIP LOCKED""")
        # A pipelined worker's claim locks its rows too (SKIP LOCKED: workers
        # claiming at the same moment take different rows, and so different
        # keys, instead of all reading the head of the backlog and queueing on
        # each other's new state rows), but passes over rows whose key a live
        # worker has leased: those are another batch in flight, whose rows its
        # owner deletes when it writes, and a lock on them held through this
        # step (which may wait for the model) would make that delete skip
        # them. The lease is looked up per row through the state's primary
        # key (a subplan, never a join over the whole state table).
        self.claim_unleased = q("""
            SELECT b.ctid::pg_catalog.text AS tid, b.xmin::pg_catalog.text AS xmin, b.key
            FROM {backlog} AS b
            WHERE b.ctid OPERATOR(pg_catalog.>) %s::pg_catalog.tid
              AND NOT COALESCE(
                    (SELECT s.lease OPERATOR(pg_catalog.=) ANY ({live})
                     FROM {state} AS s WHERE s.key {eq} b.key), false)
            LIMIT %s FOR UPDATE OF b SKIP LOCKED""")
        # Claimed rows that hold a set of keys (key NULL: a large INSERT's
        # capture, src/capture.c) become rows of one key each, in the claim's
        # transaction: the set's row is gone exactly when its keys are rows.
        self.split_key_sets = q("""
            WITH sets AS (
                DELETE FROM {backlog} WHERE ctid OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.tid[])
                RETURNING keys, queued_at)
            INSERT INTO {backlog} (key, queued_at)
            SELECT u.k, sets.queued_at FROM sets, pg_catalog.unnest(sets.keys) AS u(k)""")
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
        # Keys leased by a live worker (leases.py) are that worker's until it
        # writes them: skipped as if locked. A lease whose holder is gone is
        # taken over at once. Rows that fail the filter are not locked.
        self.lock_keys = q("""
            SELECT key, hash::pg_catalog.text AS hash FROM {state}
            WHERE key {eq} ANY (%s::{kt}[])
              AND (lease IS NULL OR lease OPERATOR(pg_catalog.<>) ALL ({live}))
            FOR UPDATE SKIP LOCKED""")
        # Live waits for the keys' row locks and takes the keys from any
        # worker that leased them: that worker finds its lease gone when it
        # comes to write, and discards its results.
        self.lock_keys_waiting = q("""
            SELECT key, hash::pg_catalog.text AS hash FROM {state}
            WHERE key {eq} ANY (%s::{kt}[]) FOR UPDATE""")
        self.break_leases = q("""
            UPDATE {state} SET lease = NULL
            WHERE key {eq} ANY (%s::{kt}[]) AND lease IS NOT NULL""")
        # A pipelined batch's claim transaction marks the keys it locked as
        # leased to this connection's token; its write transaction locks them
        # again (waiting: only a short claim, Live or a rare race holds a
        # leased row) and writes only the keys still leased to the token.
        self.take_leases = q("""
            UPDATE {state} SET lease = %s::pg_catalog.int8 WHERE key {eq} ANY (%s::{kt}[])""")
        self.relock_leased = q("""
            SELECT key FROM {state}
            WHERE key {eq} ANY (%s::{kt}[]) AND lease OPERATOR(pg_catalog.=) %s::pg_catalog.int8
            FOR UPDATE""")
        self.release_leases = q("""
            UPDATE {state} SET lease = NULL
            WHERE key {eq} ANY (%s::{kt}[]) AND lease OPERATOR(pg_catalog.=) %s::pg_catalog.int8""")
        self.delete_claimed = q("""
            DELETE FROM {backlog} WHERE ctid OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.tid[])""")
        # The rows a pipelined batch claimed, by tid and xmin (the tids
        # twice: `ctid = ANY` makes it a TID scan). A row another
        # transaction holds (a run_pipeline that claimed it and skipped its
        # leased key) stays: a duplicate backlog row is a no-op later, and
        # waiting for that transaction could take as long as it runs.
        self.delete_claimed_versions = q("""
            DELETE FROM {backlog} WHERE ctid OPERATOR(pg_catalog.=) ANY (ARRAY(
                SELECT ctid FROM {backlog}
                WHERE ctid OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.tid[])
                  AND (ctid::pg_catalog.text OPERATOR(pg_catalog.||) '/'
                       OPERATOR(pg_catalog.||) xmin::pg_catalog.text)
                      OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.text[])
                FOR UPDATE SKIP LOCKED))""")
        # The key list twice: `st.key = ANY (keys)` makes the state table's
        # primary key the way in. A plain join to the unnest was planned, in
        # a run's one transaction (no statistics yet), as a hash join over
        # a seq scan of the whole state table: quadratic in the backlog.
        self.remember_state = q("""
            UPDATE {state} AS st SET hash = u.h::pg_catalog.uuid, updated_at = pg_catalog.now(),
                                     lease = NULL
            FROM ROWS FROM (pg_catalog.unnest(%s::{kt}[]), pg_catalog.unnest(%s::pg_catalog.text[])) AS u(k, h)
            WHERE st.key {eq} ANY (%s::{kt}[]) AND st.key {eq} u.k""")
        self.forget_state = q("DELETE FROM {state} WHERE key {eq} ANY (%s::{kt}[])")
        self.requeue = q("INSERT INTO {backlog} (key) SELECT pg_catalog.unnest(%s::{kt}[])")
        self.pending_keys = q("""
            SELECT pg_catalog.count(DISTINCT k) AS n FROM (
                SELECT key FROM {backlog} WHERE key IS NOT NULL
                UNION ALL SELECT pg_catalog.unnest(keys) FROM {backlog} WHERE keys IS NOT NULL
            ) AS b(k)""")
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
