"""One batch of a pipeline, in the caller's transaction (DESIGN.md,
"Processing a batch"):

  1. claim up to batch_size backlog rows (FOR UPDATE SKIP LOCKED) and take an
     advisory lock per distinct key, in key order;
  2. delete every backlog row of the locked keys;
  3. read the current source rows (a missing or filtered-out row means:
     delete its destination rows);
  4. run the steps on the keys whose content changed;
  5. replace the destination rows and the content hashes of those keys.

A crash anywhere rolls all of it back into the backlog. A key that the model
rejects is recorded in the error log and skipped; provider outages and
configuration errors raise (the runner rolls the batch back and records them).
"""

from dataclasses import dataclass, field

from ..errors import AidbError, ModelError, RECORD_PERMANENT
from ..models.base import EmbeddingModel
from ..pgvector import vector_bytes
from . import error_log, volume_source
from .queries import BatchQueries
from .steps import knowledge_base_of, text_steps_of
from .steps.errors import RecordError


@dataclass
class BatchResult:
    claimed: list = field(default_factory=list)    # every key this batch claimed
    processed: int = 0                             # keys locked and brought up to date
    embedded: int = 0                              # keys whose parts were (re)computed
    removed: int = 0                               # keys whose destination rows went away
    failed: int = 0                                # keys recorded as RecordPermanent


def run_batch(db, pipeline, model_loader, exclude_keys=()):
    """Claim, lock and process one batch; keys in `exclude_keys` are not claimed."""
    queries = BatchQueries(pipeline)
    claimed = db.query(queries.claim_and_lock, list(exclude_keys), pipeline.batch_size)
    result = BatchResult(claimed=[row["k"] for row in claimed])
    locked = [row["k"] for row in claimed if row["locked"]]
    if locked:
        db.execute(queries.delete_backlog, locked)
        _merge(result, process_keys(db, pipeline, locked, model_loader))
    return result


def process_keys(db, pipeline, keys, model_loader):
    """Bring the destination rows of `keys` in step with the source."""
    queries = BatchQueries(pipeline)
    rows, failures = _read_source(db, pipeline, queries, keys)
    gone = [r["key"] for r in rows if r["data"] is None]
    changed = [r for r in rows if r["data"] is not None and r["hash"] != r["stored_hash"]]
    parts, step_failures = _run_text_steps(pipeline, changed, model_loader)
    failures.update(step_failures)
    vectors, embed_failures = _embed(pipeline, parts, model_loader)
    failures.update({key: ("KnowledgeBase", message) for key, message in embed_failures.items()})
    done = [r for r in changed if r["key"] not in failures]
    _write(db, queries, pipeline, done, parts, vectors, gone + list(failures))
    for step in {step for step, _ in failures.values()}:
        error_log.record_key_errors(db, pipeline.id, step, RECORD_PERMANENT,
                                    {k: m for k, (s, m) in failures.items() if s == step})
    error_log.clear_key_errors(db, pipeline.id, [r["key"] for r in done] + gone)
    return BatchResult(processed=len(keys), embedded=len(done), removed=len(gone),
                       failed=len(failures))


def _read_source(db, pipeline, queries, keys):
    """Current content of `keys`: rows (key, data, hash, stored_hash) and
    {key: (step, error)} for records that cannot be read."""
    if pipeline.source_kind == "volume":
        rows, failures = volume_source.read_rows(db, pipeline, keys)
        return rows, {key: ("read", message) for key, message in failures.items()}
    return db.query(queries.read_source, keys), {}


def _merge(total, part):
    total.processed += part.processed
    total.embedded += part.embedded
    total.removed += part.removed
    total.failed += part.failed


def _run_text_steps(pipeline, rows, model_loader):
    """{key: [part texts]} after the text steps, and {key: (step, error)} for
    keys whose content a step could not handle. Step errors that are not about
    the record (a model outage in SummarizeText) stop the batch."""
    steps = text_steps_of(pipeline.steps, model_loader)
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


def _embed(pipeline, parts, model_loader):
    """({key: [vectors]}, {key: error}); keys rejected by the model are isolated
    by splitting the batch in halves, so one bad record costs few requests."""
    options = knowledge_base_of(pipeline.steps)
    if options is None or not parts:
        return {}, {}
    model = model_loader(options["model"])
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
    """Replace the destination rows of `done` keys, delete those of removed ones."""
    rewritten = [r["key"] for r in done]
    if rewritten or removed_keys:
        db.execute(queries.delete_destination, rewritten + removed_keys)
    if removed_keys:
        db.execute(queries.forget_state, removed_keys)
    if not rewritten:
        return
    columns = _destination_columns(pipeline, rewritten, parts, vectors)
    if columns[0]:
        db.execute(queries.insert_destination, *columns)
    db.execute(queries.remember_state, rewritten, [r["hash"] for r in done])


def _destination_columns(pipeline, keys, parts, vectors):
    """Parallel arrays (key, part id, value[, vector bytes]) for the insert."""
    with_vectors = knowledge_base_of(pipeline.steps) is not None
    out_keys, part_ids, values, vectors_out = [], [], [], []
    for key in keys:
        for part_id, text in enumerate(parts[key]):
            out_keys.append(key)
            part_ids.append(part_id)
            values.append(text)
            if with_vectors:
                vectors_out.append(vector_bytes(vectors[key][part_id]))
    return (out_keys, part_ids, values, vectors_out) if with_vectors else (out_keys, part_ids, values)
