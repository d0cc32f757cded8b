"""aidb: the pipeline engine of the aidb PostgreSQL extension.

The same package runs inside PostgreSQL (PL/Python, through `aidb.db.plpy_db`)
and outside it (the external worker, over psycopg). It never imports a
database driver at module level: the caller hands it a `Database`.
"""

__version__ = "0.2.0"


def __getattr__(name):
    # aidb.Worker without importing psycopg where the engine runs in PL/Python.
    if name == "Worker":
        from .worker import Worker
        return Worker
    raise AttributeError(name)
