"""Another user's model credentials, by every route (issue #12).

The victim registers models whose API keys are unique secrets: one the
model server accepts, one it rejects (so that errors are raised about it).
The attacker (an aidb user), a reader and a login role with nothing then
look for those secrets in every place a secret could surface: the model
views and tables, encode_text's errors, the victim's pipeline errors and
aidb.pipem's last error, pg_stat_activity while the victim's create_model
is in flight, and a listener on 127.0.0.1 that the attacker controls and
tries to make the victim's model send to (taking over the model's name,
replacing its credentials, editing its URL, naming a server environment
variable as credentials_env). Finally the server log, where the victim's
own failures are logged, must hold none of them either.

How each form of a key is masked in one error (repr, escaped, split, URL-
encoded...) is tests/test_credentials.py's subject; this is about who sees what.
"""

import socket
import threading
import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.attack import scratch_database, SUPERUSER, drop_roles, make_cast
from tests.support.model_server import ModelServer
from tests.support.pipeline_checks import SERVER_MODEL

pytestmark = pytest.mark.security

GOOD = "sk-victim-good-" + uuid.uuid4().hex          # accepted by the server
BAD = "sk-victim-rejected-" + uuid.uuid4().hex       # the server answers 401 to it
LITERAL = "sk-victim-literal-" + uuid.uuid4().hex    # in a create_model statement's text
SECRETS = (GOOD, BAD, LITERAL)


class Listener:
    """A TCP listener on 127.0.0.1 that keeps every byte it receives."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.connections = 0
        self.received = b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self):
        while True:
            try:
                connection, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                connection.settimeout(2)
                try:
                    while chunk := connection.recv(65536):
                        self.received += chunk
                except OSError:
                    pass

    def close(self):
        self.sock.close()


def model_config(url, **extra):
    return Jsonb({"model": SERVER_MODEL, "url": url, "dimensions": 8, "max_retries": 0,
                  "timeout": 5, **extra})


@pytest.fixture(scope="module")
def world(cluster):
    server = ModelServer(api_key=GOOD).start()
    listener = Listener()
    try:
        with scratch_database(cluster, "cred_", template="aidb_template") as dbname:
            cast = make_cast(cluster, dbname)
            with cast.session(cast.victim) as victim:
                for name, key in (("victim_model", GOOD), ("victim_rejected", BAD)):
                    victim.execute("SELECT aidb.create_model(%s, 'openai_embeddings', %s, %s)",
                                   (name, model_config(server.url + "/v1"), Jsonb({"api_key": key})))
                victim.execute(f"CREATE TABLE {cast.victim}.docs (id int PRIMARY KEY, body text)")
                victim.execute(f"INSERT INTO {cast.victim}.docs VALUES (1, 'one'), (2, 'two')")
                victim.execute(
                    "SELECT aidb.create_pipeline(name => 'victims', source => %s, "
                    "source_data_column => 'body', step_1 => 'KnowledgeBase', "
                    "step_1_options => aidb.knowledge_base_config('victim_rejected'), "
                    "destination => %s)", (f"{cast.victim}.docs", f"{cast.victim}.docs_dest"))
            cast.server, cast.listener = server, listener
            yield cast
        drop_roles(cluster, cast)
    finally:
        listener.close()
        server.stop()


def everything_said(exc):
    """All the text an error carries to the client."""
    diag = exc.diag
    return " ".join(filter(None, [str(exc), diag.message_primary, diag.message_detail,
                                  diag.message_hint, diag.context]))


def assert_no_secret(text, where):
    for secret in SECRETS:
        assert secret not in text, f"{where} holds a secret"


def test_the_victims_own_failures_say_what_failed_without_the_key(world):
    notices = []
    with world.session(world.victim) as victim:
        victim.add_notice_handler(lambda d: notices.append(" ".join(
            filter(None, [d.message_primary, d.message_detail, d.message_hint]))))
        with pytest.raises(psycopg.errors.Error) as rejected:
            victim.execute("SELECT aidb.encode_text('victim_rejected', 'x')")
        assert "401" in everything_said(rejected.value)
        assert_no_secret(everything_said(rejected.value), "encode_text's error")
        victim.execute("SELECT aidb.run_pipeline('victims')")
        errors = victim.execute("SELECT message FROM aidb.pipeline_errors").fetchall()
        last = victim.execute('SELECT "last error" FROM aidb.pipem WHERE pipeline = %s',
                              ("victims",)).fetchone()[0]
    assert errors and last and "401" in last
    assert_no_secret(" ".join(notices) + repr(errors) + last, "the victim's notices and views")


@pytest.mark.parametrize("role", ["attacker", "reader", "nobody"])
def test_other_roles_see_no_credentials_anywhere(world, role):
    with world.session(getattr(world, role)) as other:
        seen = [other.execute(f"SELECT * FROM {relation}").fetchall() for relation in (
            "aidb.models", "aidb.model_registry", "aidb.model_credentials",
            "aidb.pipeline_errors", "aidb.pipem", "aidb.pipelines")]
        assert seen[2] == []                                   # no credential rows at all
        assert other.execute('SELECT "last error" FROM aidb.pipem WHERE pipeline = %s',
                             ("victims",)).fetchone() == (None,)
        assert other.execute("SELECT count(*) FROM aidb.pipeline_errors").fetchone() == (0,)
        assert_no_secret(repr(seen), f"what {role} reads")
        for model in ("victim_model", "victim_rejected"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege) as refused:
                other.execute("SELECT aidb.encode_text(%s, 'x')", (model,))
            assert "credentials" in refused.value.diag.message_primary
            assert_no_secret(everything_said(refused.value), f"encode_text for {role}")


def test_pg_stat_activity_shows_no_other_users_statement(world):
    with world.session(world.victim) as victim, world.session(world.attacker) as attacker:
        victim.execute("BEGIN")
        victim.execute("SELECT aidb.create_model('victim_literal', 'openai_embeddings', "
                       f"'{{\"model\": \"m\", \"url\": \"{world.server.url}/v1\"}}', "
                       f"'{{\"api_key\": \"{LITERAL}\"}}')")
        rows = attacker.execute("SELECT * FROM pg_stat_activity").fetchall()
        mine = attacker.execute("SELECT query FROM pg_stat_activity WHERE usename = %s",
                                (world.victim,)).fetchall()
        victim.execute("ROLLBACK")
    assert mine and all(query == "<insufficient privilege>" for (query,) in mine)
    assert_no_secret(repr(rows), "pg_stat_activity")


def test_the_attackers_listener_never_receives_the_victims_key(world):
    sent = world.server.state()["requests_total"]
    listener = world.listener
    with world.session(world.attacker) as attacker:
        with pytest.raises(psycopg.errors.DuplicateObject, match="already exists"):
            attacker.execute("SELECT aidb.create_model('victim_model', 'openai_embeddings', %s)",
                             (model_config(listener.url),))
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied to replace"):
            attacker.execute("SELECT aidb.create_model('victim_model', 'openai_embeddings', %s, "
                             "%s, replace_credentials => true)",
                             (model_config(listener.url), Jsonb({"api_key": "mine"})))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            attacker.execute("UPDATE aidb.model_registry SET config = jsonb_set(config, '{url}', "
                             "to_jsonb(%s::text)) WHERE name = 'victim_model'", (listener.url,))
        assert attacker.execute("DELETE FROM aidb.model_registry WHERE name = 'victim_model'"
                                ).rowcount == 0
        assert attacker.execute("DELETE FROM aidb.model_credentials").rowcount == 0
        for variable in ("PGDATA", "HOME", "PATH", "AIDB_WORKER_DB_URL"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege,
                               match="not allowed by aidb.allowed_credentials_env"):
                attacker.execute("SELECT aidb.create_model(%s, 'openai_embeddings', %s, %s)",
                                 (f"env_{variable}", model_config(listener.url),
                                  Jsonb({"credentials_env": variable})))
    with world.session(world.victim) as victim:
        assert victim.execute("SELECT vector_dims(aidb.encode_text('victim_model', 'hello'))"
                              ).fetchone() == (8,)
        assert victim.execute("SELECT config->>'url' FROM aidb.models WHERE name = 'victim_model'"
                              ).fetchone() == (world.server.url + "/v1",)
    assert world.server.state()["requests_total"] == sent + 1
    assert listener.connections == 0 and listener.received == b""


def test_the_server_log_holds_no_secret(cluster, world):
    """Last in the module: every failure above was logged by the server."""
    log = cluster.log_text()
    assert "401" in log or "rejected" in log
    assert_no_secret(log, "the server log")
