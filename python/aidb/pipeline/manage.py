"""create_pipeline, update_pipeline and delete_pipeline.

Every check runs before the first write, and everything happens in the
caller's transaction, so bad input changes nothing. Creation order matters:
the capture triggers exist before the existing rows are enqueued, and
CREATE TRIGGER's lock holds writers back until we commit, so no change is
missed in between."""

import json

from ..errors import AidbError, InvalidInput, DUPLICATE_OBJECT, INSUFFICIENT_PRIVILEGE
from ..privileges import require_aidb_user
from . import destination, guard, volume_source
from .definition import load_pipeline, load_pipeline_by_id
from .queries import batch_queries
from .source import resolve_source
from .steps import knowledge_base_of, validate_steps
from ..sqltext import sql

MODES = ("Live", "Background", "Disabled")


def create_pipeline(db, args, model_loader):
    """`args` holds create_pipeline's arguments by name; returns the pipeline."""
    require_aidb_user(db, "create pipelines")
    _check_not_null(args, "name", "source", "auto_processing", "batch_size",
                    "background_sync_interval", "owner_role")
    _check_name(db, args["name"])
    _check_settings(db, args["auto_processing"], args["batch_size"], args["background_sync_interval"])
    owner = _check_owner(db, args["owner_role"])
    if volume_source.is_volume(db, args["source"]):
        origin = _volume_origin(db, args)
    else:
        origin = _table_origin(db, args, owner)
        _check_live_possible(args["auto_processing"], origin["kind"], args["source"])
    steps = validate_steps(args["steps"], origin["kind"])
    # Before any model is asked anything: created by a superuser for another
    # role, a pipeline may still spend only that role's keys.
    guard.check_models_usable(db, args["name"], steps, owner)
    _check_step_models(steps, model_loader)
    columns = destination.expected_columns(db, origin["key_type"], _model_dimensions(db, steps, model_loader))
    schema, table, dest_oid = destination.resolve_destination(db, args["name"], args["destination"],
                                                              origin["schema"])
    if dest_oid is not None:
        destination.check_reuse(db, dest_oid, f"{schema}.{table}", columns, owner, args["name"],
                                _key_facts(db, origin))
        dest_name = destination.qualified_name(schema, table)
    else:
        dest_name = destination.create(db, schema, table, columns, owner)
    pipeline_id = db.query("""
        INSERT INTO aidb.pipeline_registry
            (name, source, source_volume, source_type, source_key_column, source_data_column,
             source_filter, destination, steps, auto_processing, batch_size,
             background_sync_interval, owner_role)
        VALUES (%s, %s::oid::regclass, %s, %s, %s, %s, %s, %s::regclass, %s::jsonb, %s, %s,
                %s::interval, pg_catalog.quote_ident(%s)::regrole)
        RETURNING id""", args["name"], origin["oid"], origin["volume"], origin["kind"],
                           origin["key_column"], origin["data_column"], args["source_filter"],
                           str(dest_name), _json(steps), args["auto_processing"], args["batch_size"],
                           args["background_sync_interval"], owner)[0]["id"]
    pipeline = load_pipeline_by_id(db, pipeline_id)
    install_objects(db, pipeline, fresh=True)
    if pipeline.source_type != "volume":
        guard.check_source_as_owner(db, pipeline)
    _capture_existing(db, pipeline)
    return pipeline


def _table_origin(db, args, owner):
    """Where a table or view pipeline reads from (checked)."""
    src = resolve_source(db, args["source"], args["source_key_column"],
                         args["source_data_column"], owner)
    if guard.caller_is_owner(db, owner):
        # Planned by the caller: the planner may run the filter's and the
        # view's functions. Others' pipelines: guard.check_source_as_owner.
        _check_filter(db, src, args["source_filter"])
    key_type = db.query("SELECT pg_catalog.format_type(atttypid, atttypmod) AS t FROM pg_catalog.pg_attribute "
                        "WHERE attrelid = %s::oid AND attname = %s", src.oid, src.key_column)[0]["t"]
    return {"oid": src.oid, "volume": None, "kind": src.kind, "key_column": src.key_column,
            "data_column": src.data_column, "key_type": key_type, "schema": src.schema}


def _volume_origin(db, args):
    """Where a volume pipeline reads from: objects, keyed by their key."""
    for option in ("source_key_column", "source_data_column", "source_filter"):
        if args[option] is not None:
            raise InvalidInput(f'{option} does not apply to volume "{args["source"]}"',
                               hint="A volume pipeline's key is the object key; its data, the object.")
    _check_live_possible(args["auto_processing"], "volume", args["source"])
    return {"oid": None, "volume": args["source"], "kind": "volume", "key_column": None,
            "data_column": None, "key_type": "text", "schema": _current_schema(db)}


def _current_schema(db):
    return db.resolve_with_caller_path("SELECT pg_catalog.current_schema() AS s")[0]["s"]


def _capture_existing(db, pipeline):
    """Tables and views: every existing row (a table's capture triggers exist
    already, and their lock keeps writers out until we commit). Volumes: a
    first scan."""
    if pipeline.source_type == "volume":
        volume_source.scan(db, pipeline)
        return
    db.execute(batch_queries(pipeline).enqueue_all)


def install_objects(db, pipeline, fresh=False):
    """Backlog, state, the owner's functions and (tables) the capture
    function and triggers, via the narrow SECURITY DEFINER installer, which
    builds them all from the catalogs (sql/ext/25_pipeline_objects.sql)."""
    db.execute("SELECT aidb._install_pipeline_objects(%s::int, %s)", pipeline.id, fresh)


def pipeline_for_change(db, name):
    """The pipeline called `name`, if the caller may change or run it (a
    member of its owner role); a clear error otherwise."""
    require_aidb_user(db, "manage pipelines")
    pipeline = load_pipeline(db, name)
    _check_may_change(db, pipeline)
    return pipeline


def update_pipeline(db, name, auto_processing, batch_size, background_sync_interval):
    """Change how a pipeline runs; NULL arguments keep their value."""
    pipeline = pipeline_for_change(db, name)
    _check_settings(db, auto_processing, batch_size, background_sync_interval)
    _check_live_possible(auto_processing, pipeline.source_type, pipeline.source or pipeline.volume)
    db.execute("""
        UPDATE aidb.pipeline_registry
        SET auto_processing = coalesce(%s::text, auto_processing),
            batch_size = coalesce(%s::integer, batch_size),
            background_sync_interval = coalesce(%s::text::interval, background_sync_interval)
        WHERE id = %s""", auto_processing, batch_size, background_sync_interval, pipeline.id)
    updated = load_pipeline_by_id(db, pipeline.id)
    if updated.auto_processing != pipeline.auto_processing and updated.source_type == "table":
        install_objects(db, updated)
    return updated


def delete_pipeline(db, name, drop_destination):
    """Remove triggers, backlog, state and bookkeeping; keep the destination
    table unless asked to drop it."""
    pipeline = pipeline_for_change(db, name)
    # A shared destination (sql/ext/26_shared_destinations.sql) loses only
    # this pipeline's rows; aidb never created it, so it never drops it.
    shared = destination.is_shared(db, pipeline)
    if drop_destination and pipeline.destination is not None and not shared:
        guard.check_may_drop_destination(db, pipeline)
    if shared:
        destination.remove_rows_of(db, pipeline)
    # The capture triggers go with their function (DROP ... CASCADE there):
    # the owner may follow a table it does not own, and only a table's owner
    # may DROP TRIGGER.
    db.execute("SELECT aidb._drop_pipeline_objects(%s::int)", pipeline.id)
    db.execute("DELETE FROM aidb.pipeline_registry WHERE id = %s", pipeline.id)
    if drop_destination and shared:
        db.notice(f'pipeline "{name}": its rows are removed from shared destination '
                  f"{pipeline.destination}; the table stays")
    elif drop_destination and pipeline.destination is not None:   # None: dropped by hand
        db.execute(sql("DROP TABLE {destination}", destination=pipeline.destination_name))


# --- checks ----------------------------------------------------------------------------


def _key_facts(db, origin):
    """What a shared destination needs to know of the pipeline's key type."""
    if origin["oid"] is None:       # a volume: object keys are text
        return {"key_type": "text", "base_type": "text", "deterministic": True}
    return destination.key_facts(db, origin["key_type"], origin["oid"], origin["key_column"])


def _check_not_null(args, *names):
    for name in names:
        if args[name] is None:
            raise InvalidInput(f"{name} must not be NULL")


def _check_name(db, name):
    if len(name.encode()) > 63:
        raise InvalidInput(f'pipeline name "{name}" is too long ({len(name.encode())} bytes)',
                           hint="A pipeline name has at most 63 bytes, like any PostgreSQL name.")
    if not (name and (name[0].isalpha() or name[0] == "_")
            and all(ch.isalnum() or ch in "_$" for ch in name)):
        raise InvalidInput(f'invalid pipeline name "{name}"',
                           hint="Use an identifier: a letter or underscore, then letters, digits "
                                "or underscores.")
    if db.query("SELECT 1 FROM aidb.pipeline_registry WHERE name = %s", name):
        raise AidbError(f'pipeline "{name}" already exists', sqlstate=DUPLICATE_OBJECT,
                        hint="Choose another name, or aidb.delete_pipeline() the old one first.")


def _check_live_possible(auto_processing, source_type, source):
    """Live runs in the writing transaction, so it needs triggers on the
    source: a view (no triggers) or a volume (files change outside any
    transaction) would wait silently for a run."""
    if auto_processing != "Live" or source_type == "table":
        return
    if source_type == "volume":
        raise InvalidInput(f'a pipeline over volume "{source}" cannot be Live',
                           hint="Files change outside any transaction: use 'Background' "
                                "(scans every background_sync_interval) or 'Disabled'.")
    raise InvalidInput(f'a pipeline over view {source} cannot be Live',
                       hint="A view carries no triggers: use 'Background' (the view is compared "
                            "with the destination at every sync) or 'Disabled'.")


def _check_settings(db, auto_processing, batch_size, interval):
    if auto_processing is not None and auto_processing not in MODES:
        raise InvalidInput(f"auto_processing cannot be {auto_processing!r}",
                           hint="Use 'Live', 'Background' or 'Disabled'.")
    if batch_size is not None and not 1 <= batch_size <= 10000:
        raise InvalidInput(f"batch_size must be between 1 and 10000, not {batch_size}")
    if interval is not None and not db.query(
            "SELECT %s::interval BETWEEN '1 second' AND '2 days' AS ok", str(interval))[0]["ok"]:
        raise InvalidInput(f"background_sync_interval must be between 1 second and 2 days, "
                           f"not {interval}")


def _check_owner(db, owner_role):
    rows = db.query("SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s", owner_role)
    if not rows:
        raise AidbError(f'owner role "{owner_role}" does not exist', sqlstate="42704",
                        hint="owner_role must name an existing role; it defaults to the caller.")
    if not db.query("SELECT pg_catalog.pg_has_role(%s, 'MEMBER') AS ok", owner_role)[0]["ok"]:
        raise AidbError(f'permission denied to create a pipeline owned by role "{owner_role}"',
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        hint="You must be a member of the owner role.")
    return owner_role


def check_may_run(db, pipeline):
    """The current role may run batches of `pipeline` (a member of its owner
    role, as a background worker logged in as the owner is)."""
    _check_may_change(db, pipeline)


def _check_may_change(db, pipeline):
    if not db.query("SELECT pg_catalog.pg_has_role(%s::regrole::oid, 'MEMBER') AS ok",
                    pipeline.owner_role)[0]["ok"]:
        raise AidbError(f'permission denied for pipeline "{pipeline.name}"',
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        detail=f"It belongs to role {pipeline.owner_role}.")


def _check_step_models(steps, model_loader):
    """Every model a step names exists, and SummarizeText's can write text."""
    for step in steps:
        if step["operation"] == "SummarizeText":
            model = model_loader(step["options"]["model"])
            if not hasattr(model, "complete"):
                raise InvalidInput(f'SummarizeText: model "{step["options"]["model"]}" is not a '
                                   "text-generation model",
                                   hint="Use a model of provider openai_completions.")


def _model_dimensions(db, steps, model_loader):
    """Vector size of the KnowledgeBase model (None: no KnowledgeBase step);
    asks the provider once when the model's configuration does not say."""
    options = knowledge_base_of(steps)
    if options is None:
        return None
    model = model_loader(options["model"])
    return model.dimensions or len(model.embed(["aidb dimension probe"])[0])


def _check_filter(db, src, source_filter):
    """The filter must be one boolean expression over the source's columns;
    aidb._check_source_filter plans it (never runs it), so syntax errors,
    unknown columns and extra statements are refused before any write."""
    if source_filter is None:
        return
    try:
        with db.savepoint():
            db.execute("SELECT aidb._check_source_filter(%s::oid::regclass, %s)", src.oid, source_filter)
    except Exception as exc:  # noqa: BLE001 — reported with the filter
        raise InvalidInput(f'invalid source_filter "{source_filter}": {_first_line(exc)}',
                           hint="Give a boolean SQL expression over the source's columns, "
                                "such as: published_time IS NOT NULL.") from None


def _first_line(exc):
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _json(value):
    return json.dumps(value)
