"""What failed, kept in aidb.pipeline_error_log (shown by aidb.pipeline_errors).

A key's error row is removed as soon as the key is processed successfully;
pipeline-wide rows (source_key NULL) when a batch next succeeds, or by
aidb.retry_pipeline_errors / aidb.clear_pipeline_errors."""

from ..redact import redact

_UPSERT_KEY = """
    INSERT INTO aidb.pipeline_error_log (pipeline_id, source_key, step, category, message)
    SELECT %s, k, %s, %s, m FROM ROWS FROM (pg_catalog.unnest(%s::pg_catalog.text[]),
                                        pg_catalog.unnest(%s::pg_catalog.text[])) AS u(k, m)
    ON CONFLICT (pipeline_id, pg_catalog.md5(source_key)) WHERE source_key IS NOT NULL DO UPDATE
    SET step = EXCLUDED.step, category = EXCLUDED.category, message = EXCLUDED.message,
        attempts = pipeline_error_log.attempts + 1, last_attempt = now()"""

_UPSERT_PIPELINE = """
    INSERT INTO aidb.pipeline_error_log (pipeline_id, source_key, step, category, message)
    VALUES (%s, NULL, %s, %s, %s)
    ON CONFLICT (pipeline_id, category) WHERE source_key IS NULL DO UPDATE
    SET step = EXCLUDED.step, message = EXCLUDED.message,
        attempts = pipeline_error_log.attempts + 1, last_attempt = now()"""


def record_key_errors(db, pipeline_id, step, category, messages_by_key):
    """One error row per key (attempts counted across runs)."""
    if messages_by_key:
        keys = list(messages_by_key)
        db.execute(_UPSERT_KEY, pipeline_id, step, category, keys,
                   [redact(messages_by_key[k]) for k in keys])


def clear_key_errors(db, pipeline_id, keys):
    if keys:
        db.execute("DELETE FROM aidb.pipeline_error_log WHERE pipeline_id = %s "
                   "AND pg_catalog.md5(source_key) = ANY (ARRAY(SELECT pg_catalog.md5(k) "
                   "FROM pg_catalog.unnest(%s::pg_catalog.text[]) AS u(k)))", pipeline_id, keys)


def record_pipeline_error(db, pipeline_id, step, category, message):
    db.execute(_UPSERT_PIPELINE, pipeline_id, step, category, redact(message))


def clear_pipeline_errors(db, pipeline_id):
    db.execute("DELETE FROM aidb.pipeline_error_log "
               "WHERE pipeline_id = %s AND source_key IS NULL", pipeline_id)
