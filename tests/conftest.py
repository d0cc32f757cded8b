"""Fixtures: a real PostgreSQL cluster that preloads aidb, a fresh database per
test, and a real OpenAI-compatible model server on 127.0.0.1.

Nothing here is mocked: the cluster runs the installed extension and its
background workers, and the model server speaks the OpenAI wire format.
Only fixtures live here; the helpers test modules share are in tests/support/
(test modules import nothing from conftest or from each other).
"""

import os
import subprocess
import sys
import uuid

import psycopg
import pytest

# pytest.ini's pythonpath puts python/ (the engine), the repository root
# (tests.support) and scripts/ (pgcluster) on sys.path.
from pgcluster import PG_BIN, throwaway_cluster
from tests.support.common import ROOT, TEST_API_KEY, scratch_database
from tests.support.model_server import ModelServerControl
from tests.support.pipeline_checks import MODEL, create_fake_model
from tests.support.polling import wait_for
from tests.support.workers import set_model_config


def pytest_report_header():
    """Which server the session tests (scripts/test.sh runs several majors;
    PG_CONFIG or AIDB_PG_BIN picks one, see scripts/pgcluster.py)."""
    version = subprocess.run([os.path.join(PG_BIN, "postgres"), "--version"],
                             capture_output=True, text=True).stdout.strip()
    return f"server: {version} ({PG_BIN})"


@pytest.fixture(scope="session")
def cluster():
    """One cluster for the session, with a template database that has aidb."""
    pg = throwaway_cluster()
    pg.psql("CREATE DATABASE aidb_template")
    pg.psql("CREATE EXTENSION aidb CASCADE", dbname="aidb_template")
    yield pg
    pg.destroy()


@pytest.fixture
def dbname(cluster):
    """A fresh database with aidb installed, dropped after the test."""
    with scratch_database(cluster, "t_", template="aidb_template") as name:
        yield name


@pytest.fixture
def conn(cluster, dbname):
    """An autocommit psycopg connection to the test's database."""
    with psycopg.connect(cluster.dsn(dbname), autocommit=True) as connection:
        yield connection


@pytest.fixture
def connect(cluster, dbname):
    """Opens more connections to the test's database (closed after the test)."""
    opened = []

    def open_connection(**kwargs):
        connection = psycopg.connect(cluster.dsn(dbname), autocommit=True, **kwargs)
        opened.append(connection)
        return connection

    yield open_connection
    for connection in opened:
        connection.close()


@pytest.fixture
def aidb_user(cluster, dbname):
    """A login role in aidb_users with a schema of its own (first on its
    search_path), and a connection as it; its pipelines, objects and the
    role are removed afterwards."""
    role = "r_" + uuid.uuid4().hex[:10]
    cluster.psql(f"CREATE ROLE {role} LOGIN IN ROLE aidb_users")
    cluster.psql(f"CREATE SCHEMA AUTHORIZATION {role}", dbname=dbname)
    with psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True) as connection:
        yield role, connection
    cluster.psql(f"SELECT aidb.delete_pipeline(name) FROM aidb.pipelines "
                 f"WHERE owner_role::text = '{role}'; "
                 f"DROP SCHEMA {role} CASCADE; DROP OWNED BY {role}", dbname=dbname)
    cluster.psql(f"DROP ROLE {role}")


@pytest.fixture(scope="session")
def model_server_process(tmp_path_factory):
    """The OpenAI-compatible test server, in its own process (its CPU must not
    compete with the test's GIL), requiring TEST_API_KEY."""
    # In pytest's own temporary tree, which it prunes to the last few runs.
    port_file = str(tmp_path_factory.mktemp("model-server") / "port")
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "tests", "support", "model_server.py"),
         "--port", "0", "--port-file", port_file, "--api-key", TEST_API_KEY,
         "--dims", "8", "--reject-model", "no-such-model"],
        stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(port_file) and open(port_file).read().strip(),
             message="the model server's port file")
    port = int(open(port_file).read().strip())
    yield f"http://127.0.0.1:{port}"
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture
def model_server(model_server_process):
    """The test server's control handle, reset to healthy before each test."""
    control = ModelServerControl(model_server_process)
    control.reset()
    control.url = model_server_process
    yield control
    control.reset()


@pytest.fixture
def fake_model(request, conn, model_server):
    """The test server's model as MODEL in the test's database (two quick
    retries, 5 s timeout: create_fake_model); returns the server's control
    handle. A test, class or module marked `model_settings(...)` gets those
    settings merged in, e.g. `model_settings(max_retries=1, timeout=2)` so
    that a failing batch ends within seconds and a worker backs off."""
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    marker = request.node.get_closest_marker("model_settings")
    if marker:
        set_model_config(conn, MODEL, **marker.kwargs)
    return model_server
