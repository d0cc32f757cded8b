"""Fixtures: a real PostgreSQL cluster that preloads aidb, a fresh database per
test, and a real OpenAI-compatible model server on 127.0.0.1.

Nothing here is mocked: the cluster runs the installed extension and its
background workers, and the model server speaks the OpenAI wire format.
"""

import contextlib
import os
import subprocess
import sys
import uuid

import psycopg
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
sys.path.insert(0, ROOT)

from pgcluster import PG_BIN, throwaway_cluster  # noqa: E402
from tests.support.model_server import ModelServerControl  # noqa: E402
from tests.support.polling import wait_for  # noqa: E402,F401 — tests import it from here

TEST_API_KEY = "sk-test-key-0123456789abcdef"


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


@contextlib.contextmanager
def scratch_database(cluster, prefix, template=None):
    """A new database (a copy of `template`) for the block, dropped afterwards."""
    name = prefix + uuid.uuid4().hex[:12]
    cluster.psql(f"CREATE DATABASE {name}" + (f" TEMPLATE {template}" if template else ""))
    try:
        yield name
    finally:
        cluster.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


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
