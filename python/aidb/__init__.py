"""aidb: the pipeline engine of the aidb PostgreSQL extension.

The same package runs inside PostgreSQL (PL/Python, through `aidb.db.plpy_db`)
and outside it (the external worker, over psycopg). It never imports a
database driver at module level: the caller hands it a `Database`.
"""

__version__ = "0.1.0"
