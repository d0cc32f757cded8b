"""DROP DATABASE cannot be used to stop another role's pipeline workers.

aidb's ProcessUtility hook (src/dropdb.c) stops a database's workers before
DROP DATABASE, which would otherwise fail on their sessions. Any role that
can connect may type the command, so the hook must act only for one that
PostgreSQL's own checks will let through: by the database's owner, outside
a transaction block and outside a function, on another database. Each
attack below fails with PostgreSQL's usual error, and the pipeline's worker
is the very same process afterwards (a stopped worker would come back with
another pid).
"""

import uuid

import psycopg
import pytest

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.pipeline_checks import create_docs, create_fake_model, create_pipeline
from tests.support.workers import running_worker

pytestmark = pytest.mark.workers


@pytest.fixture
def role(cluster):
    """A plain login role: it can connect to every database (PUBLIC's CONNECT)."""
    name = "r_" + uuid.uuid4().hex[:10]
    cluster.psql(f"CREATE ROLE {name} LOGIN")
    yield name
    # It may own the test's database by then: give that back first.
    cluster.psql(f"REASSIGN OWNED BY {name} TO postgres; DROP OWNED BY {name}; DROP ROLE {name}")


@pytest.fixture
def worker_pid(conn, model_server):
    """The pid of a running Background pipeline's worker in the test database."""
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(1, "one"), (2, "two")])
    create_pipeline(conn, auto_processing="Background")
    return wait_for(lambda: running_worker(conn), message="the pipeline's worker")


def attack(dsn, statements, error):
    """Run `statements` in one session; the last must fail with `error`."""
    with psycopg.connect(dsn, autocommit=True) as session:
        for statement in statements[:-1]:
            session.execute(statement)
        with pytest.raises(error):
            session.execute(statements[-1])


@pytest.mark.smoke      # object_ownercheck on 16+, pg_database_ownercheck on 15
def test_a_non_owner_cannot_stop_the_workers(cluster, dbname, conn, role, worker_pid):
    attack(cluster.dsn(user=role), [f"DROP DATABASE {dbname}"],
           psycopg.errors.InsufficientPrivilege)
    assert running_worker(conn) == worker_pid
    # WITH (FORCE) would terminate every session, ours included: checked first too.
    attack(cluster.dsn(user=role), [f"DROP DATABASE {dbname} WITH (FORCE)"],
           psycopg.errors.InsufficientPrivilege)
    assert running_worker(conn) == worker_pid


def test_drops_that_fail_their_own_checks_leave_the_workers_alone(cluster, dbname, conn, role,
                                                                  worker_pid):
    conn.execute(f"ALTER DATABASE {dbname} OWNER TO {role}")
    owner = cluster.dsn(user=role)
    attacks = {
        "in a transaction block": (
            owner, ["BEGIN", f"DROP DATABASE {dbname}"], psycopg.errors.ActiveSqlTransaction),
        "in a function": (
            owner, [f"DO $$ BEGIN EXECUTE 'DROP DATABASE {dbname}'; END $$"],
            psycopg.errors.ActiveSqlTransaction),
        "of the current database": (
            cluster.dsn(dbname, user=role), [f"DROP DATABASE {dbname}"],
            psycopg.errors.ObjectInUse),
    }
    for what, (dsn, statements, error) in attacks.items():
        attack(dsn, statements, error)
        assert running_worker(conn) == worker_pid, f"DROP DATABASE {what} stopped the worker"


@pytest.mark.slow      # stops and restarts the workers
def test_the_owners_drop_still_stops_the_workers(cluster, dbname, conn, role, worker_pid):
    """The hook's purpose survives: the owner's DROP stops the workers (and,
    failing on our own open session, gives the database its workers back)."""
    conn.execute(f"ALTER DATABASE {dbname} OWNER TO {role}")
    attack(cluster.dsn(user=role), [f"DROP DATABASE {dbname}"], psycopg.errors.ObjectInUse)
    wait_for(lambda: running_worker(conn, other_than=worker_pid),
             message="a new worker after the failed drop")
