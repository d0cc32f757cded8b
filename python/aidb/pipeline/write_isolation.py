"""Writing a batch's destination rows so that one key the destination refuses
does not fail the batch (docs/architecture.md, "Failures").

The destination belongs to the pipeline owner: its constraints, its
triggers and its btree limits may refuse the rows of a key the source holds
(a CHECK on the value, a text key too long for the destination's primary
key). Such a key would otherwise fail its batch again and again, and with it
every key claimed with it. The write is tried in a savepoint; when it fails
with an error caused by the rows' values, the keys are split in halves, each
written in its own savepoint, down to the keys that fail alone (as
batch._embed_group does for the model): those are reported, the others
written. A refused key's old destination rows are removed if the
destination allows it, since they no longer match the source.

Errors that are not about the values (a dropped destination, a lock
timeout, a cancelled query) are raised unchanged: they are the pipeline's.
"""

# SQLSTATEs caused by the values of the rows written: data exceptions
# (class 22), integrity constraint violations (23: CHECK, NOT NULL, UNIQUE,
# foreign keys), program limits (54: index row size), and an exception
# raised by a trigger of the destination (P0001).
_RECORD_CLASSES = ("22", "23", "54")
_RECORD_STATES = ("P0001",)


def write_isolating_keys(db, write, rewritten, removed):
    """write(rewritten_keys, removed_keys) -> keys handed back (busy), run in
    savepoints; returns (busy keys, {key: why the destination refused it})."""
    refused = {}
    busy = _write_group(db, write, [(key, True) for key in rewritten]
                        + [(key, False) for key in removed], refused)
    return busy, refused


def _write_group(db, write, items, refused):
    error = _try(db, write, [key for key, new in items if new], [key for key, new in items if not new])
    if not isinstance(error, Exception):
        return error
    if len(items) == 1:
        key, new = items[0]
        refused[key] = _describe(error)
        if new:
            # Its old rows describe content the source no longer has.
            rows_removed = _try(db, write, [], [key])
            if not isinstance(rows_removed, Exception):
                return rows_removed
        return []
    middle = len(items) // 2
    return (_write_group(db, write, items[:middle], refused)
            + _write_group(db, write, items[middle:], refused))


def _try(db, write, rewritten, removed):
    """The busy keys of one write in a savepoint, or the record error that
    rolled it back (any other error is raised)."""
    try:
        with db.savepoint():
            return list(write(rewritten, removed))
    except Exception as exc:  # noqa: BLE001 — only errors about the values are ours to isolate
        if not is_record_error(exc):
            raise
        return exc


def is_record_error(exc):
    state = getattr(exc, "sqlstate", None) or getattr(getattr(exc, "diag", None), "sqlstate", None)
    return bool(state) and (state[:2] in _RECORD_CLASSES or state in _RECORD_STATES)


def _describe(exc):
    message = getattr(getattr(exc, "diag", None), "message_primary", None) or str(exc)
    first_line = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return (f"the destination refused the key's rows: {first_line}. Fix the destination "
            "(its constraints, index or triggers) or the source row; "
            "aidb.retry_pipeline_errors() queues the key again")
