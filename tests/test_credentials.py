"""Credentials under attack (issue #12, item 4).

- credentials_env may name only the server environment variables that a
  superuser listed in aidb.allowed_credentials_env (empty by default), at
  create_model and again at every use; a non-superuser cannot widen it.
- A key is masked in every form an error can carry it: raw, repr and bytes
  repr, backslash- and JSON-escaped, URL-encoded, split across lines
  (property-based, then end to end against a real HTTP server on 127.0.0.1
  that echoes the key back in each form).
- A key that no HTTP client can send (line break, control character, not
  ASCII) is a clear credentials error at create_model and at use: never a
  retried connection failure, never echoed.
"""

import json
import os
import re
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import quote, quote_plus

import h11
import httpx
import psycopg
import pytest
from hypothesis import assume, given, settings, strategies as st
from psycopg.types.json import Jsonb

from tests.support.common import TEST_API_KEY, scratch_database
from pgcluster import throwaway_cluster
from tests.support.pipeline_checks import (
    SERVER_MODEL, create_docs, create_fake_model, create_pipeline, insert_docs, metrics,
    pipeline_errors)

from aidb.errors import ModelError, PIPELINE_PERMANENT
from aidb.models.config import resolve_api_key, unsendable_key
from aidb.redact import MASK, Redactor

SETTING = "aidb.allowed_credentials_env"

# How a message may carry a secret. Each takes the secret, returns its text.
FORMS = {
    "raw": lambda s: s,
    "repr": repr,
    "ascii": ascii,
    "bytes repr": lambda s: repr(s.encode("utf-8")),
    "latin-1 bytes repr": lambda s: repr(s.encode("latin-1")),     # where it encodes
    "backslash-escaped": lambda s: s.encode("unicode_escape").decode("ascii"),
    "JSON": json.dumps,
    "JSON, not ASCII-only": lambda s: json.dumps(s, ensure_ascii=False),
    "repr of JSON": lambda s: repr(json.dumps(s)),
    "JSON of bytes repr": lambda s: json.dumps(repr(s.encode("utf-8"))),
    "URL-encoded": lambda s: quote(s, safe=""),
    "URL-encoded, path": quote,
    "URL-encoded, plus": quote_plus,
    "URL-encoded, lower-case hex": lambda s: re.sub(r"%[0-9A-F]{2}",
                                                    lambda m: m.group().lower(), quote(s, safe="")),
}

# Secrets of any text (no lone surrogates: no encoder takes them), 8+
# characters, often all latin-1 (so that the latin-1 form applies).
_characters = st.one_of(st.characters(max_codepoint=255),
                        st.characters(exclude_categories=("Cs",)))
secrets = st.one_of(st.text(st.characters(max_codepoint=255), min_size=8, max_size=40),
                    st.text(_characters, min_size=8, max_size=40))
surroundings = st.text(_characters, max_size=20)


def shown_as(form, secret):
    """The secret in `form`; skips the example where the form cannot hold it."""
    try:
        return FORMS[form](secret)
    except UnicodeEncodeError:
        assume(False)


# --- redaction, no database ------------------------------------------------------------------

@pytest.mark.slow      # 100 generated examples
@settings(max_examples=100, deadline=None)
@given(secret=secrets, form=st.sampled_from(sorted(FORMS)), before=surroundings,
       after=surroundings)
def test_a_known_secret_is_masked_in_every_form(secret, form, before, after):
    shown = shown_as(form, secret)
    redacted = Redactor([secret]).redact(f"{before}{shown}{after}")
    assert shown not in redacted and MASK in redacted, (form, redacted)


# Characters each form puts before and after the secret (quotes, b'...').
WRAPPERS = {"repr": (1, 1), "ascii": (1, 1), "bytes repr": (2, 1), "latin-1 bytes repr": (2, 1),
            "JSON": (1, 1), "JSON, not ASCII-only": (1, 1), "repr of JSON": (2, 2),
            "JSON of bytes repr": (3, 2)}


def secret_part(form, shown):
    """`shown` without the characters its form put around the secret. A
    bytes repr of a secret with ' and no " is in double quotes, which JSON
    escapes: '"b\\"...\\""' instead of '"b'...'"'."""
    lead, trail = WRAPPERS.get(form, (0, 0))
    if form == "JSON of bytes repr" and shown.startswith('"b\\"'):
        lead, trail = 4, 3
    return shown[lead:len(shown) - trail]


@pytest.mark.slow      # 100 generated examples
@settings(max_examples=100, deadline=None)
@given(secret=secrets, form=st.sampled_from(sorted(FORMS)), data=st.data())
def test_a_known_secret_split_across_lines_is_masked(secret, form, data):
    shown = secret_part(form, shown_as(form, secret))
    cut = data.draw(st.integers(1, len(shown) - 1), label="cut")
    wrap = data.draw(st.sampled_from(["\n", "\r\n", "\n    ", " \\\n", "\n\t"]), label="wrap")
    redacted = Redactor([secret]).redact(f"error: {shown[:cut]}{wrap}{shown[cut:]} (sending)")
    assert MASK in redacted, (form, redacted)
    assert shown[:cut] + wrap not in redacted and wrap + shown[cut:] not in redacted, (form,
                                                                                     redacted)


def test_an_h11_refusal_does_not_echo_the_key():
    """h11 refuses a header with a line break and quotes it as bytes."""
    key = "live-key\nsecond-half-0123"
    with pytest.raises(h11.LocalProtocolError) as refused:
        h11.Request(method="POST", target="/", headers=[("Host", "x"),
                                                         ("Authorization", f"Bearer {key}")])
    message = Redactor([key]).redact(str(refused.value))
    assert "second-half" not in message and "live-key" not in message, message


def test_the_external_workers_database_password_is_masked_in_every_form():
    from aidb.worker.settings import redact_db_error
    password = 'pa:ss@w/rd "x"'
    url = f"postgresql://worker:{quote(password, safe='')}@db.example/aidb"
    for form, spell in FORMS.items():
        shown = spell(password)
        message = redact_db_error(f"could not connect ({shown})", url)
        assert shown not in message and MASK in message, (form, message)


# --- keys that cannot be sent, no database -------------------------------------------------------

@settings(max_examples=100, deadline=None)
@given(key=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_a_key_we_accept_is_one_the_http_client_sends(key):
    """unsendable_key may refuse more than h11 and httpx do, never less."""
    if unsendable_key(key) is None:
        h11.Request(method="POST", target="/", headers=[("Host", "x"),
                                                         ("Authorization", f"Bearer {key}")])
        httpx.Headers({"Authorization": f"Bearer {key}"}).raw


@pytest.mark.parametrize("key, kind", [
    ("sk-line\nbreak-0123", "a line break"), ("sk-carriage\rreturn", "a line break"),
    ("sk-trailing-newline\n", "a line break"), ("sk-euro-\u20ac-0123", "not ASCII"),
    ("sk-latin1-\u00e9-0123", "not ASCII"), ("sk-control-\x01-0123", "a control character"),
    ("sk-delete-\x7f-0123", "a control character"), ("sk-tab\t0123", "a space or tab"),
    ("sk-inner space", "a space or tab"),
])
def test_an_unsendable_stored_key_is_a_permanent_credentials_error(key, kind):
    with pytest.raises(ModelError) as refused:
        resolve_api_key("m", {"api_key": key})
    error = refused.value
    assert error.category == PIPELINE_PERMANENT
    assert "cannot be sent in an HTTP header" in error.message and kind in error.message
    assert_not_shown(key, error.message, error.hint or "")


def assert_not_shown(key, *texts):
    """No form of `key`, nor either half of it, is in any of `texts`."""
    halves = [key[:len(key) // 2], key[len(key) // 2:]]
    for text in texts:
        for form, spell in FORMS.items():
            try:
                shown = spell(key)
            except UnicodeEncodeError:      # a form this key cannot take
                continue
            assert shown not in text, f"the key, {form}, is in: {text!r}"
        for half in halves:
            assert half.strip() not in text, f"half of the key is in: {text!r}"


# --- credentials_env against a real cluster ------------------------------------------------------

@pytest.fixture
def aidb_user(cluster, dbname):
    """A login role in aidb_users, and a connection as it."""
    role = "r_" + uuid.uuid4().hex[:10]
    cluster.psql(f"CREATE ROLE {role} LOGIN IN ROLE aidb_users")
    with psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True) as connection:
        yield role, connection
    cluster.psql(f"DROP OWNED BY {role}", dbname=dbname)
    cluster.psql(f"DROP ROLE {role}")


def create_model(conn, url, credentials, name="m"):
    conn.execute("SELECT aidb.create_model(%s, 'openai_embeddings', %s, %s)",
                 (name, Jsonb({"model": SERVER_MODEL, "url": url + "/v1", "max_retries": 2,
                               "timeout": 5}), Jsonb(credentials)))


def sql_error(conn, statement, params=()):
    with pytest.raises(psycopg.Error) as info:
        conn.execute(statement, params)
    return info.value


def error_text(error):
    diag = error.diag
    return "\n".join(p for p in (diag.message_primary, diag.message_detail, diag.message_hint,
                                 diag.context) if p)


def requests_sent(model_server):
    return model_server.state()["requests_total"]


@pytest.mark.parametrize("variable", ["PATH", "HOME", "PGDATA", "AIDB_WORKER_DB_URL",
                                      "AWS_SECRET_ACCESS_KEY"])
def test_credentials_env_names_no_variable_by_default(conn, aidb_user, model_server, variable):
    _, user = aidb_user
    sent = requests_sent(model_server)
    error = sql_error(user, "SELECT aidb.create_model('m', 'openai_embeddings', %s, %s)",
                      (Jsonb({"model": SERVER_MODEL, "url": model_server.url + "/v1"}),
                       Jsonb({"credentials_env": variable})))
    assert error.sqlstate == "42501"
    assert (f"environment variable {variable} is not allowed by {SETTING}"
            in error.diag.message_primary)
    assert f"{SETTING} is empty" in error.diag.message_detail
    assert "ALTER SYSTEM SET" in error.diag.message_hint
    assert conn.execute("SELECT count(*) FROM aidb.model_registry WHERE name = 'm'"
                        ).fetchone() == (0,)
    assert requests_sent(model_server) == sent


def test_credentials_env_must_look_like_a_variable_and_is_not_echoed(aidb_user, model_server):
    _, user = aidb_user
    pasted_key = "sk-pasted-here-by-mistake-0123"
    error = sql_error(user, "SELECT aidb.create_model('m', 'openai_embeddings', %s, %s)",
                      (Jsonb({"model": SERVER_MODEL, "url": model_server.url + "/v1"}),
                       Jsonb({"credentials_env": pasted_key})))
    assert error.sqlstate == "22023" and "must be the name of an environment variable" in error_text(error)
    assert_not_shown(pasted_key, error_text(error))


def test_a_non_superuser_cannot_widen_the_allowlist(cluster, dbname, aidb_user):
    role, user = aidb_user
    for attempt in (f"SET {SETTING} = 'PATH'",
                    f"SELECT set_config('{SETTING}', 'PATH', false)",
                    f"ALTER ROLE {role} SET {SETTING} = 'PATH'",
                    f"ALTER DATABASE {dbname} SET {SETTING} = 'PATH'"):
        error = sql_error(user, attempt)
        assert error.sqlstate == "42501", (attempt, error)
    assert user.execute("SELECT aidb._allowed_credentials_env()").fetchone() == ("",)


@pytest.fixture(scope="module")
def cluster_without_preload():
    """A cluster that loads aidb only when a session first calls into it, so
    a session can SET an aidb.* placeholder before the module defines it."""
    pg = throwaway_cluster(settings={"shared_preload_libraries": "''"})
    pg.psql("CREATE EXTENSION aidb CASCADE")
    yield pg
    pg.destroy()


@pytest.mark.slow      # a cluster of its own
def test_a_placeholder_set_before_the_module_loads_does_not_widen_the_allowlist(
        cluster_without_preload, model_server):
    pg = cluster_without_preload
    role = "r_" + uuid.uuid4().hex[:10]
    pg.psql(f"CREATE ROLE {role} LOGIN IN ROLE aidb_users")
    with psycopg.connect(pg.dsn(user=role), autocommit=True) as user:
        user.execute(f"SET {SETTING} = 'PATH'")          # a placeholder: aidb is not loaded yet
        assert user.execute(f"SHOW {SETTING}").fetchone() == ("PATH",)
        error = sql_error(user, "SELECT aidb.create_model('m', 'openai_embeddings', %s, %s)",
                          (Jsonb({"model": SERVER_MODEL, "url": model_server.url + "/v1"}),
                           Jsonb({"credentials_env": "PATH"})))
        assert error.sqlstate == "42501"
        assert (f"environment variable PATH is not allowed by {SETTING}"
                in error.diag.message_primary)
        assert user.execute("SELECT aidb._allowed_credentials_env()").fetchone() == ("",)


def test_an_allowed_variable_is_checked_again_at_each_use(cluster, dbname, aidb_user,
                                                         model_server):
    role, user = aidb_user
    cluster.psql(f"ALTER DATABASE {dbname} SET {SETTING} = 'OTHER, PATH'")
    with psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True) as allowed:
        create_model(allowed, model_server.url, {"credentials_env": "PATH"})
        # Allowed: PATH is sent, and the server refuses it.
        error = sql_error(allowed, "SELECT aidb.encode_text('m', 'x')")
        assert "rejected the credentials (HTTP 401)" in error.diag.message_primary
    sent = requests_sent(model_server)
    cluster.psql(f"ALTER DATABASE {dbname} RESET {SETTING}")
    with psycopg.connect(cluster.dsn(dbname, user=role), autocommit=True) as tightened:
        error = sql_error(tightened, "SELECT aidb.encode_text('m', 'x')")
    assert error.sqlstate == "42501"
    assert f"environment variable PATH is not allowed by {SETTING}" in error.diag.message_primary
    assert requests_sent(model_server) == sent


# --- keys that cannot be sent, through SQL -------------------------------------------------------

UNSENDABLE = ["sk-line\nbreak-0123456789", "sk-trailing-newline-0123\n", "sk-euro-\u20ac-0123456",
              "sk-latin1-\u00e9-01234567", "sk-control-\x01-0123456", "sk-inner space-0123456"]


@pytest.mark.parametrize("key", UNSENDABLE)
def test_an_unsendable_key_is_refused_by_create_model(conn, model_server, key):
    sent = requests_sent(model_server)
    error = sql_error(conn, "SELECT aidb.create_model('m', 'openai_embeddings', %s, %s)",
                      (Jsonb({"model": SERVER_MODEL, "url": model_server.url + "/v1"}),
                       Jsonb({"api_key": key})))
    assert error.sqlstate == "22023"
    assert "the api_key cannot be sent in an HTTP header" in error.diag.message_primary
    assert_not_shown(key, error_text(error))
    assert conn.execute("SELECT count(*) FROM aidb.model_registry WHERE name = 'm'"
                        ).fetchone() == (0,)
    assert requests_sent(model_server) == sent


@pytest.mark.parametrize("key", UNSENDABLE[:3])
def test_an_unsendable_stored_key_blocks_at_use_without_a_request(cluster, conn, model_server,
                                                                  key):
    """A key stored before these checks existed (or restored from a dump)."""
    create_model(conn, model_server.url, {"api_key": TEST_API_KEY})
    conn.execute("UPDATE aidb.model_credentials SET credentials = %s WHERE model = 'm'",
                 (Jsonb({"api_key": key}),))
    sent = requests_sent(model_server)
    error = sql_error(conn, "SELECT aidb.encode_text('m', 'x')")
    assert "the API key in its api_key cannot be sent in an HTTP header" in error_text(error)
    assert "gave up" not in error_text(error) and "connection" not in error_text(error)
    assert requests_sent(model_server) == sent
    assert_not_shown(key, error_text(error), cluster.log_text())


def test_an_unsendable_key_blocks_a_pipeline_without_retries(cluster, conn, model_server):
    """A pipeline whose model's key cannot be sent shows BlockingErrors at
    once, with a credentials error that does not echo the key."""
    key = UNSENDABLE[0]
    create_fake_model(conn, model_server.url, TEST_API_KEY)
    create_docs(conn, [(1, "one")])
    create_pipeline(conn)
    conn.execute("UPDATE aidb.model_credentials SET credentials = %s",
                 (Jsonb({"api_key": key}),))
    insert_docs(conn, [(2, "two")])
    sent = requests_sent(model_server)
    conn.execute("SELECT aidb.run_pipeline('p')")
    [(source_key, category, message)] = pipeline_errors(conn)
    assert (source_key, category) == (None, "PipelinePermanent")
    assert "cannot be sent in an HTTP header: character 8 of 24 is a line break" in message
    assert metrics(conn)["Status"] == "BlockingErrors"
    assert requests_sent(model_server) == sent
    assert_not_shown(key, message, cluster.log_text())


@pytest.fixture(scope="module")
def cluster_with_bad_env_key():
    """A cluster whose server environment holds a key with a line break."""
    os.environ["AIDB_TEST_BAD_KEY"] = BAD_ENV_KEY
    try:
        pg = throwaway_cluster()
    finally:
        del os.environ["AIDB_TEST_BAD_KEY"]
    pg.psql("CREATE EXTENSION aidb CASCADE")
    pg.psql(f"ALTER DATABASE postgres SET {SETTING} = 'AIDB_TEST_BAD_KEY'")
    yield pg
    pg.destroy()


BAD_ENV_KEY = "sk-from-env-0123\nsecond-line-4567"


def test_an_unsendable_key_in_the_environment_is_refused(cluster_with_bad_env_key, model_server):
    pg = cluster_with_bad_env_key
    sent = requests_sent(model_server)
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        error = sql_error(conn, "SELECT aidb.create_model('m', 'openai_embeddings', %s, %s)",
                          (Jsonb({"model": SERVER_MODEL, "url": model_server.url + "/v1"}),
                           Jsonb({"credentials_env": "AIDB_TEST_BAD_KEY"})))
        assert error.sqlstate == "22023"
        assert ("the API key in environment variable AIDB_TEST_BAD_KEY cannot be sent"
                in error.diag.message_primary)
        assert "a line break" in error.diag.message_primary
        # Stored anyway (as a dump would restore it): refused at use too.
        conn.execute("INSERT INTO aidb.model_registry (name, provider, config) "
                     "VALUES ('m', 'openai_embeddings', %s)",
                     (Jsonb({"model": SERVER_MODEL, "url": model_server.url + "/v1",
                             "timeout": 5, "max_retries": 2}),))
        conn.execute("INSERT INTO aidb.model_credentials VALUES ('m', %s)",
                     (Jsonb({"credentials_env": "AIDB_TEST_BAD_KEY"}),))
        use_error = sql_error(conn, "SELECT aidb.encode_text('m', 'x')")
    assert "cannot be sent in an HTTP header" in use_error.diag.message_primary
    assert requests_sent(model_server) == sent
    assert_not_shown(BAD_ENV_KEY, error_text(error), error_text(use_error), pg.log_text())


# --- a server that echoes the key back, in every form --------------------------------------------

ECHOED_KEY = 'Kx7"q\\w/%2B+&=?#~Z9-echo'       # sendable, and every escaping changes it


class EchoHandler(BaseHTTPRequestHandler):
    """Answers /v1/embeddings with the status and echo form the request's
    model names ("<status> <form>"), putting the Authorization header's key
    in the error message in that form."""

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status, form = body["model"].split(" ", 1)
        key = self.headers.get("Authorization", "").removeprefix("Bearer ")
        echoed = (key[:9] + "\n    " + key[9:] if form == "split across lines"
                  else FORMS[form](key))
        answer = json.dumps({"error": {"message": f"invalid key {echoed} for this model",
                                       "type": "invalid_request_error"}}).encode()
        self.send_response(int(status))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def echo_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def echo_conn(cluster):
    """One session for all the cases: each new backend would load the engine anew."""
    with scratch_database(cluster, "t_echo_", template="aidb_template") as name:
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            yield conn


@pytest.mark.parametrize("form", sorted(FORMS) + ["split across lines"])
@pytest.mark.parametrize("status", ["401", "400", "500"])
def test_a_key_echoed_by_the_provider_never_reaches_an_error_or_the_log(cluster, echo_conn,
                                                                        echo_server, form, status):
    name = f"echo-{status}-{form}"
    echo_conn.execute("SELECT aidb.create_model(%s, 'openai_embeddings', %s, %s)",
                      (name, Jsonb({"model": f"{status} {form}", "url": echo_server + "/v1",
                                    "max_retries": 0, "timeout": 5}),
                       Jsonb({"api_key": ECHOED_KEY})))
    error = sql_error(echo_conn, "SELECT aidb.encode_text(%s, 'x')", (name,))
    text = error_text(error)
    # The provider's message stays, its quotes too; the key is masked whole.
    assert re.search(r"invalid key [b'\"]*\[REDACTED\]['\"]* for this model", text), text
    assert_not_shown(ECHOED_KEY, text, cluster.log_text())
