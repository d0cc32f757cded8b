"""Checks made before the engine acts on what a pipeline's owner controls,
whoever runs it (docs/architecture.md, "Security model").

The owner's SQL runs only inside the owner's SECURITY DEFINER functions
(aidb._source_<id>, ...). Their owner could ALTER them (SECURITY INVOKER, a
search_path, a `SET role`) and a superuser's run would then run the owner's
SQL as the superuser. The event triggers of sql/ext/70_event_triggers.sql
refuse such DDL; this is the second line: the engine calls no owner function
that is not as aidb made it. It also refuses what a pipeline's registry row
could claim that its owner may not do: use another role's model
credentials, or have another role's table dropped as its destination.
And create_pipeline, which a superuser may call for another role, reads a
view or plans a source_filter (whose functions the planner may run) only as
the owner: through the owner's functions once they exist.
"""

from ..errors import AidbError, InvalidInput, INSUFFICIENT_PRIVILEGE, PIPELINE_PERMANENT
from ..sqltext import sql
from .steps import models_of

_PROBLEM = "SELECT aidb._owner_function_problem(%s::int, %s::pg_catalog.regrole) AS problem"

_FOREIGN_CREDENTIALS = """
SELECT m.name, m.owner::pg_catalog.text AS owner
FROM aidb.model_registry m
WHERE m.name OPERATOR(pg_catalog.=) ANY (%s::pg_catalog.text[])
  AND EXISTS (SELECT FROM aidb.model_credentials c WHERE c.model OPERATOR(pg_catalog.=) m.name)
  AND NOT pg_catalog.pg_has_role(
      (SELECT r.oid FROM pg_catalog.pg_roles r        -- a bare or a quoted role name
       WHERE %s::pg_catalog.text OPERATOR(pg_catalog.=) ANY
             (ARRAY[r.rolname::pg_catalog.text, pg_catalog.quote_ident(r.rolname)])
       ORDER BY r.rolname OPERATOR(pg_catalog.=) %s::pg_catalog.text DESC LIMIT 1),
      m.owner, 'MEMBER')
ORDER BY m.name LIMIT 1"""

_FOREIGN_CREDENTIALS_AT_CREATION = _FOREIGN_CREDENTIALS.replace("ORDER BY m.name LIMIT 1", """\
  AND m.owner::pg_catalog.oid OPERATOR(pg_catalog.<>)
      (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) current_user)
ORDER BY m.name LIMIT 1""")

_MAY_DROP = """
SELECT pg_catalog.pg_has_role(%s::pg_catalog.regrole, c.relowner, 'MEMBER') AS ok,
       c.relowner::pg_catalog.regrole::pg_catalog.text AS owner
FROM pg_catalog.pg_class c WHERE c.oid OPERATOR(pg_catalog.=) %s::pg_catalog.regclass"""


def check_pipeline_objects(db, pipeline):
    """Raise (PipelinePermanent) unless each of the pipeline's owner
    functions is SECURITY DEFINER, owned by the pipeline's owner, with
    search_path = pg_catalog, pg_temp and no other setting, and unless every
    model with credentials that its steps name belongs to the owner."""
    problem = db.query(_PROBLEM, pipeline.id, pipeline.owner_role)[0]["problem"]
    if problem:
        raise AidbError(f'pipeline "{pipeline.name}" will not run: its function {problem}',
                        sqlstate=INSUFFICIENT_PRIVILEGE, category=PIPELINE_PERMANENT,
                        detail="aidb runs a pipeline owner's SQL only in functions that run with "
                               "the owner's rights and a fixed search_path.",
                        hint="A superuser can rebuild the functions with "
                             f"SELECT aidb._install_pipeline_objects({pipeline.id}); or delete the "
                             "pipeline and create it again.")
    check_models_usable(db, pipeline.name, pipeline.steps, pipeline.owner_role, "will not run")


def check_models_usable(db, name, steps, owner_role, what="cannot be created"):
    """Every model with credentials that `steps` name belongs to `owner_role`
    (or a role it is a member of): whoever runs the pipeline (a superuser,
    who can read every key), its requests spend the owner's keys. At
    creation (`what` left as is), a model of the creating role itself is
    allowed too: a superuser may lend its own model (the owner's background
    worker cannot read its key, and blocks)."""
    models = models_of(steps)
    if models:
        statement = (_FOREIGN_CREDENTIALS_AT_CREATION if what == "cannot be created"
                     else _FOREIGN_CREDENTIALS)
        rows = db.query(statement, models, owner_role, owner_role)
        if rows:
            raise AidbError(f'pipeline "{name}" {what}: model "{rows[0]["name"]}" '
                            f"has credentials of role {rows[0]['owner']}, not of the pipeline's "
                            f"owner {owner_role}",
                            sqlstate=INSUFFICIENT_PRIVILEGE, category=PIPELINE_PERMANENT,
                            hint="A pipeline may use only its owner's models, or models "
                                 "without credentials.")


def check_may_drop_destination(db, pipeline):
    """delete_pipeline(drop_destination => true) drops the destination only if
    the pipeline's owner could drop it itself: whoever deletes the pipeline
    (a superuser) must not drop another role's table that a forged registry
    row names."""
    rows = db.query(_MAY_DROP, pipeline.owner_role, pipeline.destination)
    if rows and not rows[0]["ok"]:
        raise AidbError(f'pipeline "{pipeline.name}": its destination {pipeline.destination} belongs '
                        f"to role {rows[0]['owner']}, not to the pipeline's owner "
                        f"{pipeline.owner_role}; it is not dropped",
                        sqlstate=INSUFFICIENT_PRIVILEGE,
                        hint="Delete the pipeline without drop_destination, and let the table's "
                             "owner drop it.")


# `owner_role` may be a bare role name (create_pipeline's argument) or a
# quoted one (regrole output): either matches.
_CALLER_IS_OWNER = ("SELECT EXISTS (SELECT FROM pg_catalog.pg_roles r "
                    "WHERE r.rolname OPERATOR(pg_catalog.=) current_user "
                    "AND %s::pg_catalog.text OPERATOR(pg_catalog.=) ANY "
                    "(ARRAY[r.rolname::pg_catalog.text, pg_catalog.quote_ident(r.rolname)])) AS ok")


def caller_is_owner(db, owner_role):
    """Whether this session acts as `owner_role` itself: then the source's
    code (a view, a filter's functions) may run with the caller's rights,
    which are the owner's."""
    return db.query(_CALLER_IS_OWNER, owner_role)[0]["ok"]


def check_source_as_owner(db, pipeline):
    """After create_pipeline installed the owner's functions: the source and
    its filter plan and run as the owner (aidb._source_<id> with no keys),
    and a view has no duplicate keys (through aidb._drift_<id>)."""
    read = pipeline.owner_function("source")
    try:
        with db.savepoint():
            db.query(sql("SELECT pg_catalog.count(*) AS n FROM {read}(%s::{kt}[])",
                         read=read, kt=pipeline.key_type_name), [])
    except Exception as exc:  # noqa: BLE001 — reported with the filter
        raise InvalidInput(f'invalid source_filter "{pipeline.source_filter}": '
                           f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                           hint="Give a boolean SQL expression over the source's columns, "
                                "such as: published_time IS NOT NULL.") from None
    if pipeline.source_type == "view" and db.query(sql(
            "SELECT 1 FROM {drift}() AS d GROUP BY d.key HAVING pg_catalog.count(*) > 1 LIMIT 1",
            drift=pipeline.owner_function("drift"))):
        column = db.query("SELECT source_key_column AS c FROM aidb.pipeline_registry "
                          "WHERE id OPERATOR(pg_catalog.=) %s", pipeline.id)[0]["c"]
        raise InvalidInput(f'key column "{column}" of source {pipeline.source} is not unique',
                           hint="A view's key column must hold each value once.")
