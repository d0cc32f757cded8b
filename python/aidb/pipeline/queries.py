"""The SQL of a pipeline's batches, built in one place from the pipeline's
quoted identifiers. Keys travel as text (any key type works the same way)
and are cast back to the key type inside each statement."""


class BatchQueries:
    """Statements for one pipeline; each uses %s parameters."""

    def __init__(self, pipeline):
        p = pipeline
        keys = f"%s::text[]::{p.key_type}[]"          # a text[] parameter of keys
        # Taken before a run touches the backlog. TRUNCATE on the source locks
        # the source, then (in its capture trigger) backlog, destination and
        # state; a run that held backlog locks while waiting to read the
        # source would deadlock with it, so runs lock the source first too.
        self.lock_source = f"LOCK TABLE {p.source} IN ACCESS SHARE MODE"
        # Advisory try-locks are taken in key order (a DISTINCT subquery is
        # never flattened, so the projection runs on sorted rows); a key that
        # another process holds comes back with locked = false.
        self.claim_and_lock = f"""
            SELECT k, pg_catalog.pg_try_advisory_xact_lock({p.id}, pg_catalog.hashtext(k)) AS locked
            FROM (SELECT DISTINCT key, key::text AS k
                  FROM (SELECT key FROM {p.backlog}
                        WHERE key <> ALL ({keys})
                        LIMIT %s FOR UPDATE SKIP LOCKED) AS claimed
                  ORDER BY key) AS ordered"""
        # Rows of our keys that another transaction has claimed are skipped:
        # waiting for them could deadlock, and processing a key twice is harmless.
        self.delete_backlog = f"""
            DELETE FROM {p.backlog} WHERE ctid = ANY (ARRAY(
                SELECT ctid FROM {p.backlog} WHERE key = ANY ({keys})
                FOR UPDATE SKIP LOCKED))"""
        self.read_source = f"""
            SELECT k.k AS key, s.aidb_data AS data,
                   pg_catalog.md5(s.aidb_data)::uuid::text AS hash, st.hash::text AS stored_hash
            FROM pg_catalog.unnest(%s::text[]) AS k(k)
            LEFT JOIN (SELECT {p.key_column} AS aidb_key, {p.data_column}::text AS aidb_data
                       FROM {p.source} WHERE {self._filter(p)}) AS s
                   ON s.aidb_key = k.k::{p.key_type}
            LEFT JOIN {p.state} st ON st.key = k.k::{p.key_type}"""
        self.delete_destination = f"DELETE FROM {p.destination} WHERE source_key = ANY ({keys})"
        self.insert_destination = self._insert_destination(p)
        self.forget_state = f"DELETE FROM {p.state} WHERE key = ANY ({keys})"
        self.remember_state = f"""
            INSERT INTO {p.state} (key, hash)
            SELECT k::{p.key_type}, h::uuid FROM unnest(%s::text[], %s::text[]) AS u(k, h)
            ON CONFLICT (key) DO UPDATE SET hash = EXCLUDED.hash, updated_at = now()"""
        self.requeue = f"INSERT INTO {p.backlog} (key) SELECT pg_catalog.unnest({keys})"
        self.enqueue_drift = f"""
            INSERT INTO {p.backlog} (key)
            SELECT coalesce(s.aidb_key, st.key)
            FROM (SELECT {p.key_column} AS aidb_key,
                         pg_catalog.md5({p.data_column}::text)::uuid AS hash
                  FROM {p.source}
                  WHERE {p.data_column} IS NOT NULL AND {self._filter(p)}) AS s
            FULL JOIN {p.state} st ON st.key = s.aidb_key
            WHERE s.hash IS DISTINCT FROM st.hash"""
        self.enqueue_all = f"""
            INSERT INTO {p.backlog} (key)
            SELECT {p.key_column} FROM {p.source}
            UNION SELECT source_key FROM {p.destination}"""
        self.pending_keys = f"SELECT count(DISTINCT key) AS n FROM {p.backlog}"
        # O(1), unlike the count: what a worker asks after every batch.
        self.backlog_empty = f"SELECT NOT EXISTS (SELECT FROM {p.backlog}) AS empty"

    @staticmethod
    def _filter(pipeline):
        return filter_expression(pipeline.source_filter)

    @staticmethod
    def _insert_destination(p):
        """Destination rows from parallel arrays (key, part id, value[, vector as float4 bytes])."""
        from .steps import knowledge_base_of
        if knowledge_base_of(p.steps) is None:
            return f"""
                INSERT INTO {p.destination} (source_key, part_id, value)
                SELECT k::{p.key_type}, i, v
                FROM unnest(%s::text[], %s::int[], %s::text[]) AS u(k, i, v)"""
        return f"""
            INSERT INTO {p.destination} (source_key, part_id, value, embedding)
            SELECT k::{p.key_type}, i, v, aidb._float4_vector(e)
            FROM unnest(%s::text[], %s::int[], %s::text[], %s::bytea[]) AS u(k, i, v, e)"""


def filter_expression(source_filter):
    """The user's boolean expression over a source row, parenthesised. It was
    checked when the pipeline was created and runs with the pipeline owner's
    rights only; the newline ends any trailing -- comment inside it."""
    # Engine SQL is a %s-format string for both database adapters: a literal
    # % in the filter (LIKE 'a%') must be doubled.
    return f"({source_filter.replace('%', '%%')}\n)" if source_filter else "true"
