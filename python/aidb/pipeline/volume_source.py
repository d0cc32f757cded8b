"""Volume sources: scans that enqueue new, changed and removed objects, and
the reading of objects for a batch.

A scan lists the whole volume and compares each object's fingerprint (etag
and last-modified) with the hash the destination was built from (the state
table). An interrupted listing raises before anything is enqueued, so it
can never be mistaken for "those objects were deleted". A batch checks each
key again (stat) and reads only the objects that really changed."""

import hashlib
import uuid

from ..errors import AidbError, RECORD_PERMANENT
from ..sqltext import sql


def fingerprint_hash(fingerprint):
    """The state table's uuid for a fingerprint: what md5(text)::uuid gives in SQL."""
    return str(uuid.UUID(hashlib.md5(fingerprint.encode()).hexdigest()))


def is_volume(db, name):
    """Whether `name` names a volume (volumes win over tables of the same name)."""
    if not db.query("SELECT pg_catalog.to_regclass('aidb.volume_registry') IS NOT NULL AS ok")[0]["ok"]:
        return False
    return bool(db.query("SELECT 1 FROM aidb.volume_registry WHERE name = %s", name))


def _open(db, pipeline):
    from ..volumes.store import open_named_volume
    return open_named_volume(db, pipeline.volume)


def scan(db, pipeline):
    """List the volume; enqueue new, changed and vanished objects. Returns
    how many keys were enqueued, and counts the scan for aidb.pipem."""
    objects = list(_open(db, pipeline).list())
    enqueued = db.query(sql("""
        WITH listing AS (
            SELECT k, pg_catalog.md5(f)::pg_catalog.uuid AS hash
            FROM ROWS FROM (pg_catalog.unnest(%s::pg_catalog.text[]),
                           pg_catalog.unnest(%s::pg_catalog.text[])) AS l(k, f)),
        enqueued AS (
            INSERT INTO {backlog} (key)
            SELECT coalesce(l.k, st.key) FROM listing l
            FULL JOIN {state} st ON st.key OPERATOR(pg_catalog.=) l.k
            WHERE l.hash IS DISTINCT FROM st.hash
            RETURNING 1)
        SELECT pg_catalog.count(*) AS n FROM enqueued""", backlog=pipeline.backlog, state=pipeline.state),
                        [o.key for o in objects], [o.fingerprint for o in objects])[0]["n"]
    db.execute("""
        INSERT INTO aidb.pipeline_run_stats (pipeline_id, scans_completed, objects_seen)
        VALUES (%s, 1, %s)
        ON CONFLICT (pipeline_id) DO UPDATE
        SET scans_completed = pipeline_run_stats.scans_completed + 1,
            objects_seen = EXCLUDED.objects_seen""", pipeline.id, len(objects))
    return enqueued


def read_rows(db, pipeline, keys, stored):
    """Rows for batch.process_keys — key, data (bytes; None: object gone),
    hash, stored_hash — and {key: error} for objects that cannot be read;
    `stored` holds the locked keys' stored hashes."""
    volume = _open(db, pipeline)
    rows, failures = [], {}
    for key in keys:
        found = volume.stat(key)
        if found is None:
            rows.append({"key": key, "data": None, "hash": None, "stored_hash": stored.get(key)})
            continue
        digest = fingerprint_hash(found.fingerprint)
        if digest == stored.get(key):
            rows.append({"key": key, "data": b"", "hash": digest, "stored_hash": digest})
            continue
        try:
            rows.append({"key": key, "data": volume.read(key), "hash": digest,
                         "stored_hash": stored.get(key)})
        except AidbError as exc:
            if exc.category != RECORD_PERMANENT:
                raise
            failures[key] = exc.message
    return rows, failures
