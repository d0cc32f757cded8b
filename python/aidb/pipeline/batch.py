"""One batch of a pipeline, in the caller's transaction (docs/architecture.md,
"The batch protocol"):

  1. claim up to batch_size backlog rows after the claim cursor (FOR UPDATE
     SKIP LOCKED, a TID range scan);
  2. lock the claimed keys: each key's state row, created if new, locked FOR
     UPDATE SKIP LOCKED (a key another transaction holds is left alone);
  3. delete the claimed backlog rows of the locked keys;
  4. read the current source rows of those keys through the owner's function,
     in a savepoint rolled back right after (no source lock outlives it, and
     the source lock is taken NOWAIT: a batch never queues behind DDL);
  5. run the steps on the keys whose content changed (the model is called
     holding only aidb's own row locks);
  6. write the destination through the owner's function, then the hashes.

Workers split a batch in two transactions (pipelined.py: claim_keys and
read_changes, then prepare_work in a thread, then write_changes); run_pipeline
and Live run it in one. A crash anywhere rolls all of it back into the
backlog. A key that the model rejects is recorded in the error log and
skipped; provider outages and configuration errors raise (the runner rolls
the batch back and records them).
"""

from dataclasses import dataclass

from ..errors import AidbError, ModelError, PIPELINE_TEMPORARY, RECORD_PERMANENT, RECORD_TEMPORARY
from ..models.base import EmbeddingModel
from ..pgvector import vector_bytes
from . import error_log, volume_source
from .queries import FIRST_TID, batch_queries
from .steps import knowledge_base_of, text_steps_of
from .steps.errors import RecordError
from .key_identity import canonical_key
from .write_isolation import write_isolating_keys

LOCK_NOT_AVAILABLE = "55P03"


class SourceBusy(AidbError):
    """Another transaction holds (or waits for) a lock on the source that
    conflicts with reading it: DDL, TRUNCATE. The batch is rolled back and
    retried later."""

    category = PIPELINE_TEMPORARY


@dataclass
class BatchResult:
    claimed: int = 0            # backlog rows this batch claimed
    processed: int = 0          # keys locked and brought up to date
    embedded: int = 0           # keys whose parts were (re)computed
    removed: int = 0            # keys whose destination rows went away
    failed: int = 0             # keys recorded as RecordPermanent
    busy: int = 0               # keys handed back: their rows are held elsewhere


class ClaimCursor:
    """Where the next claim starts: after the last tid claimed. A worker keeps
    its cursor between batches; a run starts from the first page."""

    def __init__(self):
        self.tid = FIRST_TID

    def advance(self, tids):
        self.tid = max(tids, key=_tid_order)

    def rewind(self):
        """Start again from the first page (rows may have landed in pages
        before the cursor); False if the cursor is there already."""
        if self.tid == FIRST_TID:
            return False
        self.tid = FIRST_TID
        return True


def _tid_order(tid):
    block, offset = tid.strip("()").split(",")
    return int(block), int(offset)


def run_batch(db, pipeline, model_loader, cursor, wait_for_source=False):
    """Claim, lock and process one batch after `cursor` (advanced);
    `wait_for_source`: the caller holds the source's lock already."""
    queries = batch_queries(pipeline)
    claimed, stored = claim_keys(db, queries, pipeline, cursor)
    result = BatchResult(claimed=len(claimed))
    if stored:
        db.execute(queries.delete_claimed, [row["tid"] for row in claimed if row["key"] in stored])
        _merge(result, process_keys(db, pipeline, stored, model_loader, wait_for_source))
    return result


def claim_keys(db, queries, pipeline, cursor, pipelined=False):
    """Claim up to batch_size backlog rows after `cursor` (advanced) and lock
    their keys that nobody else holds or leases: (claimed rows (tid, xmin,
    key), {key: stored hash} of the locked keys). `pipelined`: a pipelined
    worker's claim, which passes over rows of leased keys."""
    statement = queries.claim_unleased if pipelined else queries.claim
    while True:
        claimed = [dict(row, key=canonical_key(row["key"]))
                   for row in db.query(statement, cursor.tid, pipeline.batch_size)]
        if not claimed:
            return [], {}
        cursor.advance([row["tid"] for row in claimed])
        sets = [row["tid"] for row in claimed if row["key"] is None]
        if not sets:
            break
        # Rows holding sets of keys (a large INSERT's): their keys become rows
        # of one key, visible to this transaction at once, wherever free
        # space put them. Claimed now if this claim found nothing else.
        db.execute(queries.split_key_sets, sets)
        claimed = [row for row in claimed if row["key"] is not None]
        if claimed:
            break
        cursor.rewind()
    return claimed, lock_keys(db, queries, list(dict.fromkeys(row["key"] for row in claimed)),
                              wait=False)


def lock_keys(db, queries, keys, wait):
    """{key: stored hash or None} of the keys this transaction now holds
    (with wait=False, those nobody else holds or leases; with wait=True
    (Live), all of them, their leases broken)."""
    if wait:
        db.execute(queries.add_state_rows_waiting, keys)
        rows = db.query(queries.lock_keys_waiting, keys)
        db.execute(queries.break_leases, keys)
    else:
        db.execute(queries.add_state_rows, queries.state_table, keys)
        rows = db.query(queries.lock_keys, keys)
    return {canonical_key(row["key"]): row["hash"] for row in rows}


def process_keys(db, pipeline, stored, model_loader, wait_for_source=False):
    """Bring the destination rows of the locked keys `stored` ({key: stored
    hash}) in step with the source, in one transaction (run_pipeline, Live)."""
    changes = read_changes(db, pipeline, stored, wait_for_source)
    work = prepare_work(pipeline, changes, model_loader)
    return write_changes(db, pipeline, changes, work())


@dataclass
class Changes:
    """What the source says about a batch's keys: `changed` rows (key, data,
    hash, stored_hash) to rebuild, `gone` keys to delete, and {key: (step,
    error)} of records that could not be read."""
    keys: list
    changed: list
    gone: list
    failures: dict


@dataclass
class Computed:
    """The model's part of a batch: {key: [part texts]}, {key: [vectors]}
    and {key: (step, error)} of records a step or the model refused."""
    parts: dict
    vectors: dict
    failures: dict


def read_changes(db, pipeline, stored, wait_for_source=False):
    """Read the current content of the locked keys `stored` ({key: stored hash})."""
    keys = list(stored)
    rows, failures = _read_source(db, pipeline, batch_queries(pipeline), keys, stored,
                                  wait_for_source)
    return Changes(keys=keys, failures=failures,
                   gone=[r["key"] for r in rows if r["data"] is None],
                   changed=[r for r in rows if r["data"] is not None
                            and r["hash"] != r["stored_hash"]])


def prepare_work(pipeline, changes, model_loader):
    """A function of no argument that runs the text steps and the model on
    `changes` and returns a Computed. The models are loaded now, in this
    thread (loading reads the database); the function touches no database,
    so a pipelined worker can run it in another thread, outside any
    transaction."""
    steps = text_steps_of(pipeline.steps, model_loader) if changes.changed else []
    options = knowledge_base_of(pipeline.steps)
    model = model_loader(options["model"]) if options is not None and changes.changed else None

    def work():
        parts, failures = _run_text_steps(steps, changes.changed)
        vectors, embed_failures = _embed(model, parts)
        failures.update({key: ("KnowledgeBase", message) for key, message in embed_failures.items()})
        return Computed(parts=parts, vectors=vectors, failures=failures)
    return work


def write_changes(db, pipeline, changes, computed):
    """Write a batch's results (its keys locked by this transaction): the
    destination, the hashes, the error log."""
    queries = batch_queries(pipeline)
    failures = dict(changes.failures)
    failures.update(computed.failures)
    parts, vectors, gone = computed.parts, computed.vectors, changes.gone
    done = [r for r in changes.changed if r["key"] not in failures]
    busy, refused = _write(db, queries, pipeline, done, parts, vectors, gone + list(failures))
    failures.update({key: ("write", message) for key, message in refused.items()})
    done = [r for r in done if r["key"] not in refused]
    gone = [k for k in gone if k not in refused]
    for step in {step for step, _ in failures.values()}:
        error_log.record_key_errors(db, pipeline.id, step, RECORD_PERMANENT,
                                    {k: m for k, (s, m) in failures.items() if s == step})
    if busy:
        error_log.record_key_errors(db, pipeline.id, "write", RECORD_TEMPORARY, {
            key: "its destination rows are locked by another open transaction; "
                 "the key is queued again" for key in busy})
    error_log.clear_key_errors(db, pipeline.id,
                               [r["key"] for r in done if r["key"] not in busy]
                               + [k for k in gone if k not in busy])
    return BatchResult(processed=len(changes.keys) - len(busy),
                       embedded=sum(1 for r in done if r["key"] not in busy),
                       removed=sum(1 for k in gone if k not in busy), failed=len(failures),
                       busy=len(busy))


def _read_source(db, pipeline, queries, keys, stored, wait):
    """Current content of `keys`: rows (key, data, hash, stored_hash) and
    {key: (step, error)} for records that cannot be read."""
    if pipeline.source_type == "volume":
        rows, failures = volume_source.read_rows(db, pipeline, keys, stored)
        return rows, {key: ("read", message) for key, message in failures.items()}
    found = {canonical_key(row["key"]): row for row in _source_rows(db, queries, keys, wait)}
    return [{"key": key, "data": found[key]["data"] if key in found else None,
             "hash": found[key]["hash"] if key in found else None,
             "stored_hash": stored[key]} for key in keys], {}


def _source_rows(db, queries, keys, wait):
    """The owner's function's rows for `keys`, read in a savepoint that is
    rolled back at once (its locks go with it). Without `wait` the source's
    lock is tried without waiting: DDL waiting for the source would otherwise
    make every reader of the table queue behind this batch."""
    def read():
        if not wait:
            db.execute(queries.lock_source)
        return db.query(queries.read_source, keys)
    try:
        return db.in_rolled_back_savepoint(read)
    except Exception as exc:  # noqa: BLE001 — only the lock failure is ours to explain
        if _sqlstate(exc) != LOCK_NOT_AVAILABLE:
            raise
        raise SourceBusy("the source is locked by another transaction (DDL or TRUNCATE, say); "
                         "the batch will be retried", sqlstate=LOCK_NOT_AVAILABLE) from None


def _sqlstate(exc):
    return getattr(exc, "sqlstate", None) or getattr(getattr(exc, "diag", None), "sqlstate", None)


def _merge(total, part):
    total.processed += part.processed
    total.embedded += part.embedded
    total.removed += part.removed
    total.failed += part.failed
    total.busy += part.busy     # the runner stops on a batch of only busy keys


def _run_text_steps(steps, rows):
    """{key: [part texts]} after the text `steps`, and {key: (step, error)} for
    keys whose content a step could not handle. Step errors that are not about
    the record (a model outage in SummarizeText) stop the batch."""
    parts, failures = {}, {}
    for row in rows:
        texts, step_name = [row["data"]], "read"
        try:
            for step in steps:
                step_name = step.name
                texts = [piece for text in texts for piece in step.run(_as_input(step, text))]
            texts = [_as_text(text) for text in texts]
        except AidbError as exc:
            if exc.category != RECORD_PERMANENT:
                raise
            failures[row["key"]] = (step_name, exc.message)
            continue
        except Exception as exc:  # noqa: BLE001 — one bad record must not stop the others
            failures[row["key"]] = (step_name, f"{type(exc).__name__}: {exc}")
            continue
        parts[row["key"]] = texts
    return parts, failures


def _as_input(step, data):
    """Document steps take bytes; text steps take text (volume objects arrive as bytes)."""
    return data if getattr(step, "accepts_bytes", False) else _as_text(data)


def _as_text(data):
    if isinstance(data, bytes):
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            raise RecordError("the object is not UTF-8 text",
                              hint="Parse it first: step ParseHtml, ParsePdf or PerformOcr.") from None
    return data


def _embed(model, parts):
    """({key: [vectors]}, {key: error}) from `model` (None: the pipeline
    stores only text); keys rejected by the model are isolated by splitting
    the batch in halves, so one bad record costs few requests."""
    if model is None or not parts:
        return {}, {}
    vectors, failures = {}, {}
    _embed_group(model, list(parts.items()), vectors, failures)
    return vectors, failures


def _embed_group(model: EmbeddingModel, items, vectors, failures):
    texts = [text for _, key_parts in items for text in key_parts]
    try:
        flat = iter(model.embed(texts))
    except ModelError as exc:
        if exc.category != RECORD_PERMANENT:
            raise
        if len(items) == 1:
            failures[items[0][0]] = exc.message
            return
        middle = len(items) // 2
        _embed_group(model, items[:middle], vectors, failures)
        _embed_group(model, items[middle:], vectors, failures)
        return
    for key, key_parts in items:
        vectors[key] = [next(flat) for _ in key_parts]


def _write(db, queries, pipeline, done, parts, vectors, removed_keys):
    """Replace the destination rows of `done` keys, delete those of removed
    ones, through the owner's function; returns the set of keys it handed
    back (their rows are held by another transaction), which are queued
    again and keep their old hash, and {key: message} of the keys whose rows
    the destination refused (write_isolation), whose hash is forgotten."""
    rewritten = [r["key"] for r in done]
    if not rewritten and not removed_keys:
        return set(), {}

    def write(new_keys, old_keys):
        columns = _destination_columns(pipeline, new_keys, parts, vectors)
        return db.query(queries.write_destination, new_keys + old_keys, *columns)[0]["busy"] or []
    busy, refused = write_isolating_keys(db, write, rewritten, removed_keys)
    busy = {canonical_key(key) for key in busy}
    if busy:
        db.execute(queries.requeue, list(busy))
    forget = [k for k in removed_keys if k not in busy] + [k for k in refused if k not in removed_keys]
    if forget:
        db.execute(queries.forget_state, forget)
    remember = [r for r in done if r["key"] not in busy and r["key"] not in refused]
    if remember:
        keys = [r["key"] for r in remember]
        db.execute(queries.remember_state, keys, [r["hash"] for r in remember], keys)
    return busy, refused


def _destination_columns(pipeline, keys, parts, vectors):
    """Parallel arrays (key, part id, value, vector bytes) for the insert;
    without a KnowledgeBase step the vectors are one NULL array."""
    with_vectors = knowledge_base_of(pipeline.steps) is not None
    out_keys, part_ids, values, vectors_out = [], [], [], []
    for key in keys:
        for part_id, text in enumerate(parts[key]):
            out_keys.append(key)
            part_ids.append(part_id)
            values.append(text)
            if with_vectors:
                vectors_out.append(vector_bytes(vectors[key][part_id]))
    return out_keys, part_ids, values, vectors_out if with_vectors else None
