"""The model layer against real servers: aidb.create_model / delete_model, the
aidb.models view, encode_text and encode_text_batch, with every provider.

Remote providers talk to the fake model server (tests/support/model_server.py),
which answers fake_embedding(text, dims, model), so every vector can be checked
exactly; its fault switches exercise retries, timeouts and rejected requests.
"""

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.common import TEST_API_KEY, error_text, scratch_database, sql_error, wait_for
from pgcluster import throwaway_cluster
from tests.support.fake_vectors import fake_embedding

MODEL = "text-embedding-test"      # a model the server does not know: default dims
DIMS = 8                           # the server's default dimensions
KEY = {"api_key": TEST_API_KEY}
WRONG_KEY = "sk-wrong-key-fedcba9876543210"
KEY_ENV = "AIDB_TEST_MODEL_KEY"


# ---------------------------------------------------------------- helpers

def openai_config(server, **overrides):
    """The server's OpenAI route; few retries and short timeouts keep fault tests fast."""
    return {"model": MODEL, "url": server.url + "/v1", "max_retries": 2, "timeout": 2,
            **overrides}


def ollama_config(server, **overrides):
    return {"model": MODEL, "url": server.url, "max_retries": 2, "timeout": 2, **overrides}


def create_model(conn, name, provider, config, credentials=None):
    conn.execute("SELECT aidb.create_model(%s, %s, %s, %s)",
                 (name, provider, Jsonb(config), Jsonb(credentials or {})))


def create_openai_model(conn, server, name="emb", credentials=KEY, **config):
    create_model(conn, name, "openai_embeddings", openai_config(server, **config), credentials)
    return name


def create_remote_model(conn, server, provider, name="emb", **config):
    """A model of either remote provider (Ollama's API takes no key)."""
    if provider == "ollama_embeddings":
        create_model(conn, name, provider, ollama_config(server, **config))
        return name
    return create_openai_model(conn, server, name, **config)


def encode(conn, model, text):
    return conn.execute("SELECT aidb.encode_text(%s, %s)::real[]", (model, text)).fetchone()[0]


def encode_batch(conn, model, texts):
    """encode_text_batch's vectors, in array order (NULL stays None)."""
    rows = conn.execute(
        "SELECT v::real[] FROM unnest(aidb.encode_text_batch(%s, %s::text[])) "
        "WITH ORDINALITY AS u(v, n) ORDER BY n", (model, texts)).fetchall()
    return [row[0] for row in rows]


def assert_fake_vectors(vectors, texts, dims=DIMS, model=MODEL):
    """Each vector is what the server computes for its text."""
    assert len(vectors) == len(texts)
    for vector, text in zip(vectors, texts):
        assert vector == pytest.approx(fake_embedding(text, dims, model), abs=1e-6)


def encode_error(conn, model, text="hello"):
    return sql_error(conn, "SELECT aidb.encode_text(%s, %s)", (model, text))


def answers(server):
    """(fault, HTTP status) of each request the server saw, oldest first."""
    return [(r["fault"], r["status"]) for r in server.state()["recent"]]


def registry(conn):
    """Everything stored about models, to prove a failed call changed nothing."""
    return conn.execute(
        "SELECT m.name, m.provider, m.config, m.owner::text, c.credentials "
        "FROM aidb.model_registry m LEFT JOIN aidb.model_credentials c ON c.model = m.name "
        "ORDER BY m.name").fetchall()


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def shared_db(cluster):
    """One database for most tests of this module, to keep the module fast."""
    with scratch_database(cluster, "t_models_", template="aidb_template") as name:
        yield name


@pytest.fixture(scope="module")
def shared_backend(cluster, shared_db):
    """One connection for most tests: each new backend imports the engine and
    the provider SDK again, about a second (a fresh `conn` per test would)."""
    with psycopg.connect(cluster.dsn(shared_db), autocommit=True) as conn:
        yield conn


@pytest.fixture
def shared_conn(shared_backend):
    """The shared connection; the models a test creates are gone after it."""
    yield shared_backend
    shared_backend.execute("DELETE FROM aidb.model_registry WHERE name <> 'minilm'")


# ---------------------------------------------------------------- registry

def test_create_list_and_delete_a_model(shared_conn, model_server):
    create_openai_model(shared_conn, model_server, dimensions=4)
    row = shared_conn.execute("SELECT provider, config, owner::text, has_credentials "
                              "FROM aidb.models WHERE name = 'emb'").fetchone()
    provider, config, owner, has_credentials = row
    assert (provider, owner, has_credentials) == ("openai_embeddings", "postgres", True)
    # The config comes back normalised, defaults filled in, and without the key.
    assert config == openai_config(model_server, dimensions=4, max_batch_size=256,
                                   max_concurrent_requests=8)

    shared_conn.execute("SELECT aidb.delete_model('emb')")
    assert shared_conn.execute("SELECT name FROM aidb.models").fetchall() == [("minilm",)]
    assert shared_conn.execute("SELECT count(*) FROM aidb.model_credentials").fetchone() == (0,)
    error = sql_error(shared_conn, "SELECT aidb.delete_model('emb')")
    assert error.sqlstate == "42704" and 'model "emb" does not exist' in error_text(error)


def case(provider, config, credentials=None, message="", name="x"):
    """One rejected create_model call and the message it must give."""
    return pytest.param(name, provider, config, credentials or {}, message, id=message)


REJECTED = [
    case("no_such_provider", {"model": MODEL}, message='unknown model provider "no_such_provider"'),
    case("openai_embeddings", {}, message='option "model" is required'),
    case("openai_embeddings", {"model": 7}, message='option "model" must be a non-empty string, got 7'),
    case("openai_embeddings", {"model": MODEL, "url": "not a url"},
         message='option "url" must be an http:// or https:// URL, got "not a url"'),
    case("ollama_embeddings", {"model": MODEL, "url": "ftp://127.0.0.1/api"},
         message='option "url" must be an http:// or https:// URL, got "ftp:'),
    case("openai_embeddings", {"model": MODEL, "url": "http://127.0.0.1:99999/v1"},
         message='option "url" must be a valid URL (host and port), got "http://127.0.0.1:99999'),
    case("openai_embeddings", {"model": MODEL, "dimensions": 0},
         message='option "dimensions" must be an integer from 1 to 16000, got 0'),
    case("ollama_embeddings", {"model": MODEL, "dimensions": -8},
         message='option "dimensions" must be an integer from 1 to 16000, got -8'),
    case("openai_embeddings", {"model": MODEL, "dimensions": "8"},
         message='option "dimensions" must be an integer from 1 to 16000, got "8"'),
    case("openai_embeddings", {"model": MODEL, "dimensions": 8.5},
         message='option "dimensions" must be an integer from 1 to 16000, got 8.5'),
    case("openai_embeddings", {"model": MODEL, "max_batch_size": True},
         message='option "max_batch_size" must be an integer from 1 to 2048, got true'),
    case("openai_embeddings", {"model": MODEL, "max_concurrent_requests": 1000},
         message='option "max_concurrent_requests" must be an integer from 1 to 64, got 1000'),
    case("openai_embeddings", {"model": MODEL, "timeout": "60"},
         message='option "timeout" must be a number of seconds greater than 0 and at most 3600, '
                 'got "60"'),
    case("openai_embeddings", {"model": MODEL, "max_retries": -1},
         message='option "max_retries" must be an integer from 0 to 20, got -1'),
    case("openai_embeddings", {"model": MODEL, "colour": "red"},
         message='unknown option "colour" for provider openai_embeddings'),
    case("openai_embeddings", [MODEL], message="config must be a JSON object"),
    case("openai_embeddings", {"model": MODEL}, ["k"], message="credentials must be a JSON object"),
    case("openai_embeddings", {"model": MODEL}, {"api_key": 42},
         message='credential "api_key" must be a non-empty string'),
    case("openai_embeddings", {"model": MODEL}, {"password": "p"},
         message='unknown credential "password"'),
    case("local_embeddings", {"model": "no-such-local-model"},
         message='option "model" must be one of "all-MiniLM-L6-v2", got "no-such-local-model"'),
    case("local_embeddings", {}, {"api_key": "k-123456"},
         message="a local_embeddings model takes no credentials"),
    case("local_embeddings", {}, name="", message="invalid model name ''"),
    case("local_embeddings", {}, name="n" * 64, message="invalid model name 'nnnn"),
]


@pytest.mark.parametrize("name, provider, config, credentials, message", REJECTED)
def test_create_model_rejects_bad_input_and_changes_nothing(shared_conn, name, provider, config,
                                                            credentials, message):
    before = registry(shared_conn)
    error = sql_error(shared_conn, "SELECT aidb.create_model(%s, %s, %s, %s)",
                      (name, provider, Jsonb(config), Jsonb(credentials)))
    assert error.sqlstate == "22023"
    assert message in error.diag.message_primary
    assert registry(shared_conn) == before


def test_create_model_refuses_to_overwrite_a_model(shared_conn, model_server):
    create_openai_model(shared_conn, model_server)
    before = registry(shared_conn)
    error = sql_error(shared_conn, "SELECT aidb.create_model('emb', 'ollama_embeddings', %s)",
                      (Jsonb(ollama_config(model_server)),))
    assert error.sqlstate == "42710" and 'model "emb" already exists' in error_text(error)
    # replace_credentials changes the key only, never the definition.
    error = sql_error(shared_conn, "SELECT aidb.create_model('emb', 'openai_embeddings', %s, %s, "
                                   "replace_credentials => true)",
                      (Jsonb(openai_config(model_server, dimensions=4)), Jsonb(KEY)))
    assert "already exists with another provider or config" in error_text(error)
    assert registry(shared_conn) == before


# ---------------------------------------------------------------- OpenAI-compatible

def test_openai_vectors_are_the_servers(shared_conn, model_server):
    create_openai_model(shared_conn, model_server)
    assert_fake_vectors([encode(shared_conn, "emb", "hello world")], ["hello world"])
    texts = ["one", None, "three", "drei", "trois"]
    vectors = encode_batch(shared_conn, "emb", texts)
    assert vectors[1] is None
    assert_fake_vectors(vectors[:1] + vectors[2:], texts[:1] + texts[2:])
    assert shared_conn.execute("SELECT aidb.encode_text('emb', NULL)").fetchone() == (None,)


def test_dimensions_setting_is_sent(shared_conn, model_server):
    create_openai_model(shared_conn, model_server, dimensions=5)
    assert_fake_vectors([encode(shared_conn, "emb", "short")], ["short"], dims=5)


def test_inputs_are_split_into_batches_in_order(shared_conn, model_server):
    create_openai_model(shared_conn, model_server, max_batch_size=3, max_concurrent_requests=1)
    texts = [f"text number {i}" for i in range(10)]
    assert_fake_vectors(encode_batch(shared_conn, "emb", texts), texts)
    state = model_server.state()
    assert state["requests"] == {"/v1/embeddings": 4}
    assert [r["inputs"] for r in state["recent"]] == [3, 3, 3, 1]


def test_concurrent_requests_are_capped_and_results_stay_in_order(shared_conn, model_server):
    create_openai_model(shared_conn, model_server, max_batch_size=2, max_concurrent_requests=3,
                        timeout=30)
    texts = [f"concurrent {i}" for i in range(10)]       # five batches
    model_server.set_fault("hang")                       # hold every request until released
    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(encode_batch, shared_conn, "emb", texts)
        try:
            wait_for(lambda: model_server.state()["in_flight"] >= 3, timeout=20,
                     message="three requests in flight at once")
            in_flight = model_server.state()["in_flight"]
        finally:
            model_server.set_fault("none")               # the held requests are answered
        vectors = future.result(timeout=30)
    assert in_flight == 3
    assert_fake_vectors(vectors, texts)
    assert sorted(r["inputs"] for r in model_server.state()["recent"]) == [2] * 5


def test_credentials_env_that_is_not_set_is_named(shared_conn, model_server):
    shared_conn.execute("SET aidb.allowed_credentials_env = 'AIDB_TEST_UNSET'")
    create_openai_model(shared_conn, model_server,
                        credentials={"credentials_env": "AIDB_TEST_UNSET"})
    text = error_text(encode_error(shared_conn, "emb"))
    shared_conn.execute("RESET aidb.allowed_credentials_env")
    assert "environment variable AIDB_TEST_UNSET is not set" in text
    assert model_server.state()["requests_total"] == 0


@pytest.fixture
def cluster_with_key_env(monkeypatch):
    """A cluster whose server process has the API key in KEY_ENV."""
    monkeypatch.setenv(KEY_ENV, TEST_API_KEY)
    pg = throwaway_cluster()
    yield pg
    pg.destroy()


@pytest.mark.slow      # a cluster of its own
def test_credentials_env_is_read_from_the_server_environment(cluster_with_key_env, model_server):
    pg = cluster_with_key_env
    pg.psql("CREATE EXTENSION aidb CASCADE")
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f"SET aidb.allowed_credentials_env = '{KEY_ENV}'")
        create_openai_model(conn, model_server, credentials={"credentials_env": KEY_ENV})
        assert_fake_vectors([encode(conn, "emb", "from the env")], ["from the env"])
        stored = conn.execute("SELECT credentials FROM aidb.model_credentials").fetchall()
    assert stored == [({"credentials_env": KEY_ENV},)]   # the name, not the key


# ---------------------------------------------------------------- Ollama

def test_ollama_native_api(shared_conn, model_server):
    create_model(shared_conn, "ollama", "ollama_embeddings", ollama_config(model_server))
    texts = ["un", "deux", "trois"]
    assert_fake_vectors(encode_batch(shared_conn, "ollama", texts), texts)
    assert_fake_vectors([encode(shared_conn, "ollama", "quatre")], ["quatre"])
    assert model_server.state()["requests"] == {"/api/embed": 2}


def test_ollama_unknown_model(shared_conn, model_server):
    create_model(shared_conn, "ollama", "ollama_embeddings",
                 ollama_config(model_server, model="no-such-model"))
    text = error_text(encode_error(shared_conn, "ollama"))
    assert "does not know this model or URL (HTTP 404)" in text and "no-such-model" in text


# ---------------------------------------------------------------- faults

@pytest.mark.parametrize("provider", ["openai_embeddings", "ollama_embeddings"])
def test_server_errors_are_retried(shared_conn, model_server, provider):
    create_remote_model(shared_conn, model_server, provider)
    model_server.set_fault("http500", count=2)
    assert_fake_vectors([encode(shared_conn, "emb", "retry me")], ["retry me"])
    assert answers(model_server) == [("http500", 500), ("http500", 500), (None, 200)]


@pytest.mark.parametrize("provider", ["openai_embeddings", "ollama_embeddings"])
def test_dropped_connections_are_retried(shared_conn, model_server, provider):
    create_remote_model(shared_conn, model_server, provider)
    model_server.set_fault("drop", count=1)
    assert_fake_vectors([encode(shared_conn, "emb", "dropped once")], ["dropped once"])
    assert answers(model_server) == [("drop", None), (None, 200)]


@pytest.mark.parametrize("provider", ["openai_embeddings", "ollama_embeddings"])
def test_answers_without_embeddings_are_retried_then_named(shared_conn, model_server, provider):
    create_remote_model(shared_conn, model_server, provider, max_retries=1)
    model_server.set_fault("bad200", count=1)
    assert_fake_vectors([encode(shared_conn, "emb", "once")], ["once"])
    assert answers(model_server) == [("bad200", 200), (None, 200)]
    model_server.set_fault("bad200")
    text = error_text(encode_error(shared_conn, "emb"))
    assert "gave up after 2 attempts: the answer (HTTP 200, " in text
    assert "holds no" in text and "proxy_page" not in text


def test_rate_limit_waits_for_retry_after(shared_conn, model_server):
    create_openai_model(shared_conn, model_server)
    model_server.set_fault("http429", count=1, retry_after=1)
    started = time.monotonic()
    assert_fake_vectors([encode(shared_conn, "emb", "slow down")], ["slow down"])
    # The default first backoff is about 0.5 s; Retry-After asked for 1 s.
    assert time.monotonic() - started >= 0.9
    assert answers(model_server) == [("http429", 429), (None, 200)]


def test_retry_after_holds_the_requests_queued_behind_it(shared_conn, model_server):
    # One input per request, one request at a time: the 429 answers the
    # first; the three queued behind it must wait out Retry-After too, not
    # only the retry of the refused one.
    create_openai_model(shared_conn, model_server, max_batch_size=1, max_concurrent_requests=1)
    model_server.set_fault("http429", count=1, retry_after=1)
    texts = ["one", "two", "three", "four"]
    assert_fake_vectors(encode_batch(shared_conn, "emb", texts), texts)
    recent = model_server.state()["recent"]
    [refused] = [r for r in recent if r["status"] == 429]
    later = [r for r in recent if r["received"] > refused["answered"]]
    assert len(later) == 4 and all(r["status"] == 200 for r in later)
    assert min(r["received"] for r in later) - refused["answered"] >= 0.95


def test_persistent_server_errors_give_up_with_a_clear_error(shared_conn, model_server):
    create_openai_model(shared_conn, model_server, max_retries=1)
    model_server.set_fault("http500")
    text = error_text(encode_error(shared_conn, "emb"))
    assert 'model "emb": gave up after 2 attempts: HTTP 500' in text
    assert TEST_API_KEY not in text
    assert answers(model_server) == [("http500", 500)] * 2


def test_a_hanging_server_times_out(shared_conn, model_server):
    create_openai_model(shared_conn, model_server, timeout=1, max_retries=0)
    model_server.set_fault("hang")
    started = time.monotonic()
    text = error_text(encode_error(shared_conn, "emb"))
    assert time.monotonic() - started < 15
    assert 'model "emb"' in text and "no answer within 1 s" in text


def test_rejected_credentials_are_not_retried_nor_shown(shared_conn, model_server):
    create_openai_model(shared_conn, model_server, credentials={"api_key": WRONG_KEY})
    text = error_text(encode_error(shared_conn, "emb"))
    assert 'model "emb": the provider rejected the credentials (HTTP 401)' in text
    assert WRONG_KEY not in text
    assert answers(model_server) == [(None, 401)]


def test_unknown_model_is_not_retried(shared_conn, model_server):
    create_openai_model(shared_conn, model_server, model="no-such-model")
    text = error_text(encode_error(shared_conn, "emb"))
    assert 'model "emb": the provider does not know this model or URL (HTTP 404)' in text
    assert answers(model_server) == [(None, 404)]


def test_rejected_input_is_not_retried(shared_conn, model_server):
    create_openai_model(shared_conn, model_server)
    text = error_text(encode_error(shared_conn, "emb", "a POISON pill"))
    assert 'model "emb": the provider rejected the input (HTTP 400)' in text
    error = sql_error(shared_conn, "SELECT aidb.encode_text_batch('emb', ARRAY['fine', 'POISON'])")
    assert "rejected the input (HTTP 400)" in error_text(error)
    assert answers(model_server) == [(None, 400)] * 2


def test_keys_never_show_in_errors_views_or_the_server_log(cluster, shared_conn, model_server):
    log_start = len(cluster.log_text())
    create_openai_model(shared_conn, model_server, max_retries=0)
    create_openai_model(shared_conn, model_server, name="wrong", credentials={"api_key": WRONG_KEY})
    errors = [
        encode_error(shared_conn, "wrong"),                               # 401
        encode_error(shared_conn, "emb", "POISON"),                       # 400
        sql_error(shared_conn, "SELECT aidb.create_model('emb', 'openai_embeddings', %s, %s)",
                  (Jsonb(openai_config(model_server)), Jsonb(KEY))),      # already exists
        sql_error(shared_conn, "SELECT aidb.create_model('bad', 'openai_embeddings', %s, %s)",
                  (Jsonb({"model": MODEL, "dimensions": 0}), Jsonb(KEY))),  # invalid
    ]
    model_server.set_fault("http500")
    errors.append(encode_error(shared_conn, "emb"))                       # gave up
    views = shared_conn.execute("SELECT m::text FROM aidb.models m").fetchall()
    log = cluster.log_text()[log_start:]
    assert "rejected the credentials (HTTP 401)" in log   # the errors did reach the log
    shown = "\n".join([*map(error_text, errors), str(views), log])
    assert TEST_API_KEY not in shown and WRONG_KEY not in shown


# ---------------------------------------------------------------- local model

@pytest.mark.smoke
@pytest.mark.slow          # loads torch and the model
def test_local_model_is_loaded_once_per_backend(conn):
    def timed(sql):
        started = time.monotonic()
        rows = conn.execute(sql).fetchall()
        return rows, time.monotonic() - started

    # A fresh backend (the `conn` fixture), so the first call loads the model.
    first, first_seconds = timed("SELECT vector_dims(aidb.encode_text('minilm', 'first'))")
    assert first == [(384,)]
    # Twenty more calls cost less than the first one, which loaded the model:
    # reloading on every call would cost at least twenty loads.
    later, later_seconds = timed("SELECT vector_dims(aidb.encode_text('minilm', 'text ' || g)) "
                                 "FROM generate_series(1, 20) g")
    assert later == [(384,)] * 20
    assert later_seconds < first_seconds


# ---------------------------------------------------------------- permissions

@pytest.fixture
def other_role(cluster):
    """A login role that is neither a superuser nor a member of postgres, but
    an aidb user (aidb_users exists once the session's template has aidb)."""
    role = "r_" + uuid.uuid4().hex[:10]
    cluster.psql(f"CREATE ROLE {role} LOGIN IN ROLE aidb_users")
    yield role
    cluster.psql(f"DROP ROLE {role}")


def test_other_roles_cannot_read_use_or_delete_keyed_models(cluster, shared_db, shared_conn,
                                                           model_server, other_role):
    create_openai_model(shared_conn, model_server)                      # postgres's key
    create_model(shared_conn, "shared", "ollama_embeddings", ollama_config(model_server))  # no key
    with psycopg.connect(cluster.dsn(shared_db, user=other_role), autocommit=True) as intruder:
        assert intruder.execute("SELECT * FROM aidb.model_credentials").fetchall() == []
        error = encode_error(intruder, "emb")
        assert error.sqlstate == "42501"
        assert 'permission denied for the credentials of model "emb"' in error_text(error)
        error = sql_error(intruder, "SELECT aidb.delete_model('emb')")
        assert error.sqlstate == "42501"
        error = sql_error(intruder, "SELECT aidb.create_model('emb', 'openai_embeddings', %s, %s, "
                                    "replace_credentials => true)",
                          (Jsonb(openai_config(model_server)), Jsonb({"api_key": WRONG_KEY})))
        assert error.sqlstate == "42501"
        # Going around the functions does not work either (row-level security).
        assert intruder.execute("DELETE FROM aidb.model_credentials").rowcount == 0
        assert intruder.execute("DELETE FROM aidb.model_registry").rowcount == 0
        # What it may do: use a keyless model, and own a keyed one.
        assert_fake_vectors([encode(intruder, "shared", "ok")], ["ok"])
        create_openai_model(intruder, model_server, name="mine")
        assert_fake_vectors([encode(intruder, "mine", "mine")], ["mine"])
    assert_fake_vectors([encode(shared_conn, "emb", "still mine")], ["still mine"])
    assert shared_conn.execute("SELECT count(*) FROM aidb.model_credentials").fetchone() == (2,)


def test_hash_embeddings_are_deterministic_unit_vectors_that_follow_shared_words(shared_conn):
    """The demo/test provider: the same text gives the same vector in any
    session, every vector has unit length (a text without words too, so
    cosine distance is defined), and shared words bring texts closer."""
    shared_conn.execute("SELECT aidb.create_model('hash16', 'hash_embeddings', "
                        "'{\"dimensions\": 16}')")
    try:
        first = shared_conn.execute("SELECT aidb.encode_text('hash16', 'The cat sat')::text").fetchone()
        again = shared_conn.execute("SELECT aidb.encode_text('hash16', 'the CAT sat')::text").fetchone()
        assert first == again
        norms = shared_conn.execute(
            "SELECT array_agg(round(vector_norm(aidb.encode_text('hash16', t))::numeric, 6)) "
            "FROM unnest(ARRAY['The cat sat', '', '!!', 'x']) t").fetchone()[0]
        assert norms == [1, 1, 1, 1]
        near, far = shared_conn.execute(
            "SELECT aidb.encode_text('hash16', 'cat sat mat') <=> aidb.encode_text('hash16', 'the cat sat'), "
            "aidb.encode_text('hash16', 'cat sat mat') <=> aidb.encode_text('hash16', 'quarterly tax')"
        ).fetchone()
        assert near < far
        error = sql_error(shared_conn, "SELECT aidb.create_model('hk', 'hash_embeddings', '{}', "
                                       "'{\"api_key\": \"k-1\"}')")
        assert "takes no credentials" in error.diag.message_primary
    finally:
        shared_conn.execute("SELECT aidb.delete_model('hash16')")
