"""The engine runs only with the extension SQL of its own release.

`make install` replaces the engine (and the C library) for every database
at once, but each database keeps the SQL objects of the version it has
until `ALTER EXTENSION aidb UPDATE` (docs/architecture.md, "Extension
lifecycle"). In between, the old SQL would call the new engine with old
signatures, against tables the new engine expects in another state: every
entry point refuses first, with the fix in the hint. A background worker
records that error and backs off like after any failed batch; the upgrade
clears it, which wakes the worker.

One indexed catalog lookup per call: PL/Python has no cheap way to know that
a transaction ended, and a per-session cache would miss an ALTER EXTENSION
UPDATE run while a session that loaded this engine lives on.
"""

from . import __version__
from .errors import AidbError

_INSTALLED_VERSION = ("SELECT e.extversion FROM pg_catalog.pg_extension e "
                     "WHERE e.extname OPERATOR(pg_catalog.=) 'aidb'")

OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"


def _parsed(version):
    """(0, 2, 0) from '0.2.0'; non-numeric parts compare as 0."""
    return tuple(int(part) if part.isdigit() else 0 for part in version.split("."))


def check_extension_version(db, engine_version=__version__):
    """Raise unless the database's aidb extension is of `engine_version`."""
    rows = db.query(_INSTALLED_VERSION)
    if not rows:
        return      # no extension, no entry point to call us: nothing to guard
    installed = rows[0]["extversion"]
    if installed == engine_version:
        return
    if _parsed(installed) < _parsed(engine_version):
        raise AidbError(
            f"aidb's SQL objects in this database are version {installed}, but the installed "
            f"aidb engine is version {engine_version}",
            detail="A new aidb was installed; each database keeps the objects of its old "
                   "version until it is updated, and they cannot run with the new engine.",
            hint="ALTER EXTENSION aidb UPDATE;",
            sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE)
    raise AidbError(
        f"aidb's SQL objects in this database are version {installed}, but the installed "
        f"aidb engine is the older version {engine_version}",
        detail="A session keeps the engine it loaded first; the extension has been updated "
               "since, or its new engine is not installed on this server.",
        hint=f"Reconnect; if this persists, install aidb {installed} on this server "
             "(make install).",
        sqlstate=OBJECT_NOT_IN_PREREQUISITE_STATE)
