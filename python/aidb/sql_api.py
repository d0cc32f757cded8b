"""Entry points of the extension's PL/Python functions.

Each SQL function body is two lines: make sure the engine is loaded, then call
the function of the same name here. Errors meant for the user (AidbError)
become SQL errors with their detail, hint and SQLSTATE; anything else is an
internal error whose text is redacted before it reaches a client or the log.
"""

import functools
import json

import plpy

from .db.plpy_db import PlpyDatabase
from .errors import AidbError, ModelError
from .models import ModelCache
from .models import store as model_store
from .pipeline import manage as pipeline_manage
from .pipeline import runner as pipeline_runner
from .pipeline import pipelined
from .pipeline.batch import lock_keys, process_keys
from .pipeline.definition import load_pipeline_by_id
from .pipeline.distance import operator_symbol
from .pipeline.guard import check_pipeline_objects
from .pipeline.queries import batch_queries
from .pipeline.source import check_owner_can_read, check_runs_as_owner
from .pgvector import vector_literal
from .redact import redact
from .version_check import check_extension_version
from .volumes import store as volume_store

db = PlpyDatabase()
models = ModelCache()


_FIXED_PATH = "pg_catalog, pg_temp"


def sql_entry(function=None, *, fixed_path=False):
    """Turn engine exceptions into PostgreSQL errors. The engine's own SQL
    runs under search_path = pg_catalog, pg_temp, so no object another user
    created can stand in for one it names; the caller's search_path is kept
    for resolving the names the caller passed (db.resolve_with_caller_path),
    and back in force when the function returns. `fixed_path`: the SQL
    function itself sets that search_path (internal entry points)."""
    if function is None:
        return lambda f: sql_entry(f, fixed_path=fixed_path)

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        try:
            check_extension_version(db)     # the SQL is of this engine's release
            if fixed_path:
                return function(*args, **kwargs)
            with db.engine_search_path(_FIXED_PATH):
                return function(*args, **kwargs)
        except plpy.SPIError:
            raise
        except AidbError as exc:
            extra = {"detail": exc.detail and redact(exc.detail), "hint": exc.hint}
            plpy.error(redact(exc.message), sqlstate=exc.sqlstate,
                       **{key: value for key, value in extra.items() if value})
        except Exception as exc:  # noqa: BLE001 — the last line of defence
            plpy.error(f"aidb internal error: {type(exc).__name__}: {redact(exc)}",
                       hint="This is a bug in aidb; please report it with the statement.")

    return wrapper


def model_for(name):
    """A ready model instance, with PostgreSQL's interruptible sleep for backoff."""
    _required(name, "the model name", "Pass the name of a model (SELECT name FROM aidb.models).")
    return model_store.load_model(db, models, name)


def _required(value, what, hint):
    """A NULL where a name is needed is the caller's mistake, said as such
    (never looked up as the name "None")."""
    if value is None:
        raise AidbError(f"{what} must not be NULL", sqlstate="22004", hint=hint)


@sql_entry
def create_model(name, provider, config, credentials, replace_credentials):
    _required(name, "the model name", "Name the model: 1 to 63 printable characters.")
    _required(provider, "the model provider", "Name a provider, such as 'openai_embeddings'.")
    model_store.create_model(db, name, provider, json.loads(config or "{}"),
                             json.loads(credentials or "{}"), replace_credentials)


@sql_entry(fixed_path=True)
def distance_operator(name):
    """aidb._distance_operator: the pgvector operator of a distance name."""
    return operator_symbol(name)


@sql_entry
def encode_text(model_name, text):
    if text is None:
        return None
    return vector_literal(model_for(model_name).embed([text])[0])


@sql_entry
def encode_text_batch(model_name, texts):
    if texts is None:
        return None
    present = [t for t in texts if t is not None]
    vectors = iter(model_for(model_name).embed(present))
    return [None if t is None else vector_literal(next(vectors)) for t in texts]


# --- pipelines ---------------------------------------------------------------------------

def _steps_from_args(args):
    """[(operation, options)] from step_1 .. step_10 and their options."""
    steps = []
    for n in range(1, 11):
        operation = args.get(f"step_{n}")
        if operation is not None:
            options = args.get(f"step_{n}_options")
            steps.append((operation, json.loads(options) if options else {}))
        elif args.get(f"step_{n}_options") is not None:
            raise AidbError(f"step_{n}_options is given but step_{n} is not",
                            sqlstate="22023")
    return steps


_create_pipeline_parameters = []


def _named_arguments(function, values):
    """PL/Python passes arguments as a list; name them from the catalog."""
    if not _create_pipeline_parameters:
        _create_pipeline_parameters.extend(db.query(
            "SELECT proargnames FROM pg_catalog.pg_proc WHERE oid = %s::pg_catalog.regproc",
            "aidb." + function)[0]["proargnames"])
    return dict(zip(_create_pipeline_parameters, values))


@sql_entry
def create_pipeline(values):
    args = _named_arguments("create_pipeline", values)
    args["steps"] = _steps_from_args(args)
    pipeline = pipeline_manage.create_pipeline(db, args, model_for)
    pending = db.query(batch_queries(pipeline).pending_keys)[0]["n"]
    if pipeline.auto_processing == "Live":
        _drain(pipeline)
    elif pipeline.auto_processing == "Disabled" and pending:
        db.notice(f'pipeline "{pipeline.name}" created with {pending} keys to process; '
                  f"run SELECT aidb.run_pipeline('{pipeline.name}') to process them")


@sql_entry
def update_pipeline(name, auto_processing, batch_size, background_sync_interval):
    pipeline = pipeline_manage.update_pipeline(db, name, auto_processing, batch_size,
                                               background_sync_interval)
    if auto_processing == "Live":
        _drain(pipeline)       # Live has no backlog: catch up now


@sql_entry
def delete_pipeline(name, drop_destination):
    pipeline_manage.delete_pipeline(db, name, drop_destination)


@sql_entry
def run_pipeline(name):
    _drain(pipeline_manage.pipeline_for_change(db, name))


def _drain(pipeline):
    summary = pipeline_runner.run_pipeline(db, pipeline, model_for)
    if summary.error is not None:
        plpy.warning(f'pipeline "{pipeline.name}" stopped: {redact(summary.error.message)}',
                     hint="The unprocessed keys stay queued; see aidb.pipeline_errors.")
    if summary.processed:
        keys = "key" if summary.processed == 1 else "keys"
        db.notice(f'pipeline "{pipeline.name}": {summary.processed} {keys} processed '
                  f"({summary.embedded} embedded, {summary.removed} removed, "
                  f"{summary.failed} failed) in {summary.seconds:.1f} s")


@sql_entry
def reconcile_pipeline(name):
    return pipeline_runner.reconcile(db, pipeline_manage.pipeline_for_change(db, name))


@sql_entry(fixed_path=True)
def process_live(pipeline_id, keys):
    """Called by a Live pipeline's capture trigger, inside the writing
    transaction, with the keys in their own type. It waits for the keys'
    locks (a batch of another process may hold one) and for the source."""
    pipeline = load_pipeline_by_id(db, pipeline_id)
    check_runs_as_owner(db, pipeline)
    check_pipeline_objects(db, pipeline)
    check_owner_can_read(db, pipeline)
    keys = list(dict.fromkeys(keys or []))
    if not keys:
        return
    queries = batch_queries(pipeline)
    try:
        stored = lock_keys(db, queries, keys, wait=True)
        process_keys(db, pipeline, stored, model_for, wait_for_source=True)
    except ModelError as exc:
        raise AidbError(f'Live pipeline "{pipeline.name}" could not process the change: {exc.message}',
                        hint="The statement was rolled back; retry it, or switch the pipeline to "
                             "Background with aidb.update_pipeline().") from None


@sql_entry(fixed_path=True)
def run_batch_for_worker(pipeline_id):
    """One transaction of a background worker (which commits after each
    call): starts a batch and/or writes the oldest in flight (up to
    aidb.worker_batches_in_flight at once). Returns the keys written (1 when
    it only started a batch: the worker must call again at once), 0 when
    idle, -1 when the batch failed."""
    pipeline = load_pipeline_by_id(db, pipeline_id)
    if pipeline is None:
        return 0
    pipeline_manage.check_may_run(db, pipeline)
    size = int(db.query("SELECT pg_catalog.current_setting('aidb.worker_batches_in_flight', true) "
                        "AS n")[0]["n"] or pipelined.DEFAULT_BATCHES_IN_FLIGHT)
    processed, did_work = pipelined.run_worker_step(db, _background_worker(), pipeline, model_for,
                                                    size)
    return processed if processed != 0 or not did_work else 1


def abandon_worker_batches(pipeline_id):
    """After a background worker's transaction failed (from
    aidb._record_worker_error): release the leases of its batches in flight,
    whose keys are claimed again later. In a subtransaction, and never
    raising: the error must be recorded anyway, and a lease left behind is
    released by the next step (or dies with the worker)."""
    try:
        with plpy.subtransaction():
            _background_worker().abandon(db, pipeline_id)
    except Exception:  # noqa: BLE001 — see above
        pass


def _background_worker():
    """This backend's pipelined batches, kept between its transactions."""
    global _pipelined_worker
    if _pipelined_worker is None:
        _pipelined_worker = pipelined.PipelinedWorker(pipelined.model_thread_pool())
    return _pipelined_worker


_pipelined_worker = None


# --- volumes -----------------------------------------------------------------------------

@sql_entry
def create_volume(name, uri, options):
    _required(name, "the volume name", "Name the volume: 1 to 63 printable characters.")
    _required(uri, "the volume URI", "Give a file:/// or s3:// URI.")
    volume_store.create_volume(db, name, uri, json.loads(options or "{}"))


@sql_entry
def list_volume(name):
    _required(name, "the volume name", "Pass the name of a volume (SELECT name FROM aidb.volumes).")
    # A list, not a generator: an error raised while PostgreSQL iterates
    # would reach the client as "error fetching next item from iterator".
    return list(volume_store.list_volume(db, name))
