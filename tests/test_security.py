"""Security beyond test/sql/security.sql: the egress allowlist against a real
HTTP server (a refused host gets no request, from a session or a background
worker), an external worker run by an aidb user, and the host and path
rules of aidb.egress with hostile input.

pg_regress covers the privilege rules between two users; these tests need
the model server, a worker process, or no database at all.
"""

import asyncio
import os

import psycopg
import pytest

from tests.support.common import TEST_API_KEY, wait_for
from tests.support.pipeline_checks import (
    MODEL, assert_consistent, create_docs, create_fake_model, create_pipeline, insert_docs,
    metrics, pipeline_errors)

import aidb
from aidb import egress
from aidb.errors import AidbError, ModelError, PIPELINE_PERMANENT

HOSTS = "models.example.com, *.corp.example, [::1], 10.0.0.5"


# --- egress rules, no database ---------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "https://models.example.com/v1",
    "HTTPS://Models.Example.COM:443/v1",
    "https://models.example.com./v1",
    "https://a.b.corp.example/v1",
    "http://[::1]:8080/v1",
    "http://[0:0:0:0:0:0:0:1]/v1",            # another spelling of ::1
    "http://10.0.0.5/v1",
])
def test_allowed_hosts_pass(url):
    egress.check_model_url("m", url, HOSTS)


@pytest.mark.parametrize("url", [
    "https://corp.example/v1",                       # a wildcard is for names below it
    "https://evilcorp.example/v1",
    "https://models.example.com.evil.com/v1",
    "http://10.0.0.5.evil.com/v1",
    "https://models.example.com@evil.com/v1",        # user info: the host is evil.com
    "https://evil.com#@models.example.com/v1",
    "https://evil.com\\@models.example.com/v1",      # parsers disagree: refused outright
    "https://models.example.com\t/v1",
    "https://models.ex\u0430mple.com/v1",            # a Cyrillic a
    "http://[::2]/v1",
    "http://[::1%25eth0]/v1",
    "http://[::ffff:10.0.0.5]/v1",
    "http://167772165/v1",                          # 10.0.0.5 as one number
    "http://0x0a000005/v1",
    "http://[::1/v1",                               # unclosed bracket
])
def test_other_hosts_are_refused_as_blocking_errors(url):
    with pytest.raises(ModelError) as refused:
        egress.check_model_url("m", url, HOSTS)
    assert refused.value.category == PIPELINE_PERMANENT
    assert refused.value.sqlstate == "42501"
    assert egress.HOSTS_SETTING in refused.value.message


def test_wildcard_never_matches_an_ip_address():
    patterns = egress.parse_allowed_hosts("*.0.0.5")
    assert not egress.host_allowed("10.0.0.5", patterns)
    assert egress.host_allowed("a.0.0.5", patterns)


@pytest.mark.parametrize("value, any_host", [("*", True), ("a.example, *", True), ("", False),
                                             (" , ", False)])
def test_star_allows_any_host_and_empty_allows_none(value, any_host):
    assert egress.host_allowed("anything.example", egress.parse_allowed_hosts(value)) is any_host


@pytest.mark.parametrize("entry", ["bad host!", "http://a.example", "a.example:443", "*.*.example",
                                   "a*.example", "a.example/v1", "-a.example"])
def test_a_malformed_entry_is_an_error_not_ignored(entry):
    with pytest.raises(AidbError, match="invalid entry"):
        egress.parse_allowed_hosts(f"models.example.com, {entry}")


def test_paths_outside_the_allowed_directories_are_refused(tmp_path):
    allowed = tmp_path / "data"
    (allowed / "sub").mkdir(parents=True)
    (tmp_path / "data2").mkdir()
    (tmp_path / "secret").write_text("no")
    (allowed / "escape").symlink_to(tmp_path / "secret")
    (allowed / "inside").symlink_to(allowed / "sub")
    setting = f"{allowed}, relative/dir"
    assert egress.path_allowed(str(allowed), setting)
    assert egress.path_allowed(str(allowed / "sub"), setting)
    assert egress.path_allowed(str(allowed / "inside"), setting)
    assert not egress.path_allowed(str(tmp_path / "data2"), setting)         # a prefix, not a parent
    assert not egress.path_allowed(str(allowed / ".." / "secret"), setting)
    assert not egress.path_allowed(str(allowed / "escape"), setting)          # a link leading out
    assert not egress.path_allowed("data/sub", setting)                        # relative path
    assert not egress.path_allowed(os.path.join(os.getcwd(), "relative/dir"), setting)
    assert not egress.path_allowed(str(allowed), "")


# --- egress at request time, against the model server ------------------------------------------

def set_hosts_for_database(cluster, dbname, value):
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"ALTER DATABASE {dbname} SET aidb.allowed_model_hosts = '{value}'")


def requests_sent(model_server):
    return model_server.state()["requests_total"]


def test_a_tightened_allowlist_stops_requests_before_they_are_sent(cluster, dbname, conn,
                                                                   connect, model_server):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    conn.execute("SELECT aidb.encode_text(%s, 'allowed')", (MODEL,))
    sent = requests_sent(model_server)
    set_hosts_for_database(cluster, dbname, "models.example.com")
    with pytest.raises(psycopg.errors.InsufficientPrivilege,
                       match='host "127.0.0.1" is not allowed by aidb.allowed_model_hosts'):
        connect().execute("SELECT aidb.encode_text(%s, 'refused')", (MODEL,))
    assert requests_sent(model_server) == sent
    set_hosts_for_database(cluster, dbname, "models.example.com, 127.0.0.1")
    assert connect().execute("SELECT vector_dims(aidb.encode_text(%s, 'again'))", (MODEL,)
                             ).fetchone() == (8,)


@pytest.fixture
def reset_allowed_hosts(cluster):
    """ALTER SYSTEM reaches the running background workers (on reload); it is
    cluster-wide, so it is reset after the test whatever happens."""
    yield
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute("ALTER SYSTEM RESET aidb.allowed_model_hosts")
        admin.execute("SELECT pg_reload_conf()")


def set_hosts_for_cluster(cluster, value):
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f"ALTER SYSTEM SET aidb.allowed_model_hosts = '{value}'")
        admin.execute("SELECT pg_reload_conf()")

    def in_force():
        with psycopg.connect(cluster.dsn(), autocommit=True) as fresh:
            return fresh.execute("SHOW aidb.allowed_model_hosts").fetchone()[0] == value
    wait_for(in_force, message=f"aidb.allowed_model_hosts = {value!r}")


def test_a_background_worker_blocks_on_a_refused_host(cluster, conn, model_server,
                                                      reset_allowed_hosts):
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(1, "one"), (2, "two")])
    create_pipeline(conn, auto_processing="Background")
    wait_for(lambda: metrics(conn)["Status"] == "UpToDate", message="the backfill")
    set_hosts_for_cluster(cluster, "models.example.com")
    sent = requests_sent(model_server)
    insert_docs(conn, [(3, "three")])
    wait_for(lambda: metrics(conn)["Status"] == "BlockingErrors", message="a blocking error")
    [(key, category, message)] = pipeline_errors(conn)
    assert (key, category) == (None, "PipelinePermanent")
    assert 'host "127.0.0.1" is not allowed' in message
    assert requests_sent(model_server) == sent
    set_hosts_for_cluster(cluster, "127.0.0.1")
    conn.execute("SELECT aidb.retry_pipeline_errors('p')")
    wait_for(lambda: metrics(conn)["Status"] == "UpToDate", message="recovery")
    assert assert_consistent(conn) == 3


# --- an external worker run by an aidb user ---------------------------------------------------

def test_an_external_worker_serves_an_aidb_users_pipeline(cluster, dbname, aidb_user, model_server):
    role, user_conn = aidb_user
    create_fake_model(user_conn, model_server.url, TEST_API_KEY)
    create_docs(user_conn, [(n, f"document {n}") for n in range(1, 21)])
    create_pipeline(user_conn, auto_processing="Disabled", batch_size=5)
    worker = aidb.Worker(cluster.dsn(dbname, user=role), pipelines=["p"], once=True)
    assert asyncio.run(worker.run()) == 0
    assert assert_consistent(user_conn) == 20
    # Its heartbeats are its own rows.
    assert user_conn.execute("SELECT role::text, stopped_at IS NOT NULL FROM aidb.worker_heartbeats"
                             ).fetchall() == [(role, True)]


def test_a_background_worker_runs_as_the_owner_and_blocks_without_select(
        cluster, dbname, conn, aidb_user, model_server):
    role, user_conn = aidb_user
    create_docs(conn, [(1, "one"), (2, "two")])
    conn.execute(f"GRANT SELECT, TRIGGER ON docs TO {role}")
    create_fake_model(user_conn, model_server.url, TEST_API_KEY)
    create_pipeline(user_conn, source="public.docs", destination=f"{role}.p_embeddings",
                    auto_processing="Background")
    wait_for(lambda: metrics(conn)["Status"] == "UpToDate", message="the backfill")
    assert conn.execute("SELECT usename FROM pg_stat_activity WHERE application_name = "
                        "'aidb pipeline p'").fetchall() == [(role,)]
    conn.execute(f"REVOKE SELECT ON docs FROM {role}")
    insert_docs(conn, [(3, "three")])
    wait_for(lambda: metrics(conn)["Status"] == "BlockingErrors", message="a blocking error")
    [(key, category, message)] = pipeline_errors(conn)
    assert (key, category) == (None, "PipelinePermanent")
    assert f"cannot read its source public.docs: role {role} lacks SELECT" in message
    assert conn.execute(f"SELECT array_agg(source_key ORDER BY 1) FROM {role}.p_embeddings"
                        ).fetchone() == ([1, 2],)
    conn.execute(f"GRANT SELECT ON docs TO {role}")
    user_conn.execute("SELECT aidb.retry_pipeline_errors('p')")
    wait_for(lambda: metrics(conn)["Status"] == "UpToDate", message="recovery")
    assert assert_consistent(conn) == 3
