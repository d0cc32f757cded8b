"""Self-test of tests/support/model_server.py, driven by the real openai client and httpx.

The server runs in a subprocess exactly as benchmarks and other suites start it;
one test also covers the in-process ModelServer API.
"""
from __future__ import annotations

import base64
import http.client
import json
import math
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

TESTS_DIR = Path(__file__).resolve().parent
from tests.support.fake_vectors import fake_completion, fake_embedding, token_count
from tests.support.model_server import ModelServer, ModelServerControl

SERVER_SCRIPT = TESTS_DIR / "support" / "model_server.py"
KEY = "test-key"
REJECTED = "bad-model"
MODEL = "fake-embedder"
DEFAULT_DIMS = 8
STARTUP_TIMEOUT_S = 15.0


# --------------------------------------------------------------------------
# helpers and fixtures
# --------------------------------------------------------------------------

def wait_until(predicate, timeout_s: float = 5.0, what: str = "condition"):
    """Poll predicate until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)  # polling interval, bounded by the deadline
    raise TimeoutError(f"timed out after {timeout_s}s waiting for {what}")


def read_port_file(path: Path, proc: subprocess.Popen) -> int | None:
    """The port once written; raises if the server died first."""
    if proc.poll() is not None:
        raise RuntimeError(f"model server exited with {proc.returncode}: {proc.stderr.read()}")
    text = path.read_text().strip() if path.exists() else ""
    return int(text) if text else None


def assert_vectors(vectors, texts, dims=DEFAULT_DIMS, model=MODEL, tol=1e-6):
    """vectors are fake_embedding(text, dims, model) for each text, to within tol."""
    assert len(vectors) == len(texts)
    for got, text in zip(vectors, texts):
        assert len(got) == dims
        assert list(got) == pytest.approx(fake_embedding(text, dims, model), abs=tol)


def decode_base64_floats(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    """URL of a server subprocess; on teardown checks it stops cleanly on SIGTERM."""
    port_file = tmp_path_factory.mktemp("model-server") / "port"
    proc = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "--port", "0", "--port-file", str(port_file),
         "--api-key", KEY, "--dims", str(DEFAULT_DIMS), "--reject-model", REJECTED],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = wait_until(lambda: read_port_file(port_file, proc), STARTUP_TIMEOUT_S, "port file")
        assert proc.stdout.readline().strip() == f"listening on http://127.0.0.1:{port}"
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise
    assert proc.returncode == 0, err
    assert err == ""  # request logging is silenced


@pytest.fixture
def control(server_url):
    ctl = ModelServerControl(server_url)
    ctl.reset()
    yield ctl
    ctl.reset()


@pytest.fixture
def client(server_url, control):
    with openai.OpenAI(base_url=server_url + "/v1", api_key=KEY, max_retries=0, timeout=10) as c:
        yield c


@pytest.fixture
def web(server_url, control):
    """A plain httpx client for raw wire-format checks."""
    with httpx.Client(base_url=server_url, timeout=10, trust_env=False) as c:
        yield c


def embed_ok(client, texts=("ok",)):
    """One plain request that must succeed (e.g. after a fault ran out)."""
    resp = client.embeddings.create(input=list(texts), model=MODEL, encoding_format="float")
    assert_vectors([d.embedding for d in resp.data], list(texts))


# --------------------------------------------------------------------------
# fake_vectors
# --------------------------------------------------------------------------

def test_fake_embedding_is_deterministic_unit_and_model_dependent():
    a = fake_embedding("hello", 16, "m1")
    assert a == fake_embedding("hello", 16, "m1")
    assert a != fake_embedding("hello", 16, "m2")
    assert a != fake_embedding("hello!", 16, "m1")
    for dims in (1, 7, 8, 9, 1536):
        vec = fake_embedding("hello", dims)
        assert len(vec) == dims
        assert math.hypot(*vec) == pytest.approx(1.0)
        assert all(-1.0 <= x <= 1.0 for x in vec)
    with pytest.raises(ValueError):
        fake_embedding("x", 0)


def test_fake_completion_and_tokens():
    words = [f"w{i}" for i in range(20)]
    assert fake_completion(" ".join(words)) == "summary: " + " ".join(words[:12])
    assert token_count("  two\twords\n") == 2


# --------------------------------------------------------------------------
# OpenAI embeddings
# --------------------------------------------------------------------------

def test_float_embeddings_and_usage(client):
    texts = ["hello world", "the quick brown fox"]
    resp = client.embeddings.create(input=texts, model=MODEL, encoding_format="float")
    assert resp.object == "list" and resp.model == MODEL
    assert [(d.object, d.index) for d in resp.data] == [("embedding", 0), ("embedding", 1)]
    assert_vectors([d.embedding for d in resp.data], texts)
    assert resp.usage.prompt_tokens == resp.usage.total_tokens == 6


def test_base64_embeddings_match_float(client, web):
    texts = ["alpha beta", "gamma"]
    # The openai client asks for base64 by default and decodes it itself.
    resp = client.embeddings.create(input=texts, model=MODEL)
    assert_vectors([d.embedding for d in resp.data], texts)
    # The raw wire format: base64 of little-endian float32.
    raw = web.post("/v1/embeddings", headers={"Authorization": f"Bearer {KEY}"},
                    json={"input": texts, "model": MODEL, "encoding_format": "base64"})
    assert raw.status_code == 200
    assert int(raw.headers["content-length"]) == len(raw.content)
    assert_vectors([decode_base64_floats(d["embedding"]) for d in raw.json()["data"]], texts)


def test_dimensions_model_table_and_token_inputs(client):
    resp = client.embeddings.create(input="one two", model=MODEL, dimensions=5,
                                    encoding_format="float")
    assert_vectors([resp.data[0].embedding], ["one two"], dims=5)
    big = "text-embedding-3-small"
    resp = client.embeddings.create(input=["x"], model=big)
    assert_vectors([resp.data[0].embedding], ["x"], dims=1536, model=big)
    resp = client.embeddings.create(input=[[1, 2, 3], [4, 5]], model=MODEL, encoding_format="float")
    assert_vectors([d.embedding for d in resp.data], ["1 2 3", "4 5"])
    assert resp.usage.prompt_tokens == 5
    resp = client.embeddings.create(input=[7, 8], model=MODEL, encoding_format="float")
    assert_vectors([resp.data[0].embedding], ["7 8"])


def test_wrong_or_missing_key_is_401(server_url, web):
    with openai.OpenAI(base_url=server_url + "/v1", api_key="wrong", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as exc:
            bad.embeddings.create(input="x", model=MODEL)
    assert exc.value.status_code == 401 and exc.value.code == "invalid_api_key"
    resp = web.post("/v1/embeddings", json={"input": "x", "model": MODEL})
    assert resp.status_code == 401
    assert resp.json() == {"error": {"message": "You didn't provide an API key.",
                                     "type": "invalid_request_error", "param": None,
                                     "code": "invalid_api_key"}}


def test_api_key_can_change_at_run_time(server_url, control, client):
    control.set_api_key("new-key")
    with pytest.raises(openai.AuthenticationError):
        embed_ok(client)
    with openai.OpenAI(base_url=server_url + "/v1", api_key="new-key", max_retries=0) as c:
        embed_ok(c)
    control.reset()  # restores the startup key
    embed_ok(client)


def test_rejected_model_is_404(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.embeddings.create(input="x", model=REJECTED)
    assert exc.value.code == "model_not_found"


def test_poison_input_is_400(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.embeddings.create(input=["fine", "a POISON row"], model=MODEL)
    assert exc.value.type == "invalid_request_error"
    assert "POISON" in exc.value.message
    embed_ok(client, ["fine"])


# --------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------

def test_http500_for_count_requests_then_normal(client, control):
    control.set_fault("http500", count=2)
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            embed_ok(client)
    embed_ok(client)
    state = control.state()
    assert state["fault"] == "none" and state["faults_injected"] == 2
    assert [r["status"] for r in state["recent"]] == [500, 500, 200]


def test_http429_carries_retry_after(client, control):
    control.set_fault("http429", count=1, retry_after=7)
    with pytest.raises(openai.RateLimitError) as exc:
        embed_ok(client)
    assert exc.value.response.headers["retry-after"] == "7"
    assert exc.value.code == "rate_limit_exceeded"
    embed_ok(client)


def test_fault_without_count_lasts_until_changed(client, control):
    control.set_fault("http500")
    for _ in range(3):
        with pytest.raises(openai.InternalServerError):
            embed_ok(client)
    control.set_fault("none")
    embed_ok(client)


def test_hang_times_out_and_is_released_when_switched_off(client, control):
    control.set_fault("hang")
    with pytest.raises(openai.APITimeoutError):
        client.with_options(timeout=0.5).embeddings.create(input="x", model=MODEL)
    assert control.state()["in_flight"] == 1  # still hanging server-side
    control.set_fault("none")
    wait_until(lambda: control.state()["in_flight"] == 0, what="hung request released")
    embed_ok(client)


def test_short_hang_acts_as_a_slow_response(client, control):
    control.set_fault("hang", count=1, hang_seconds=0.3)
    started = time.monotonic()
    embed_ok(client)
    assert time.monotonic() - started >= 0.3


def test_drop_is_a_connection_error(client, control):
    control.set_fault("drop", count=1)
    with pytest.raises(openai.APIConnectionError) as exc:
        embed_ok(client)
    assert not isinstance(exc.value, openai.APITimeoutError)
    embed_ok(client)
    dropped = control.state()["recent"][0]
    assert dropped["status"] is None and dropped["answered"] is None


def test_latency(client, control):
    control.set_latency(300)
    started = time.monotonic()
    embed_ok(client)
    assert time.monotonic() - started >= 0.3
    control.set_latency(0)


def _embed_at_once(server_url, count):
    """`count` requests sent together from as many threads; seconds until all answered."""
    def one():
        with openai.OpenAI(base_url=server_url + "/v1", api_key=KEY, max_retries=0,
                           timeout=30) as c:
            embed_ok(c)
    threads = [threading.Thread(target=one) for _ in range(count)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.monotonic() - started


def test_max_concurrent_queues_the_rest(server_url, control):
    # 6 requests, 2 slots, 300 ms each: three waves, never more than 2 served at once.
    control.configure(latency_ms=300, max_concurrent=2)
    elapsed = _embed_at_once(server_url, 6)
    state = control.state()
    assert elapsed >= 0.9
    assert state["peak_active"] == 2
    assert state["peak_queued"] >= 3
    assert state["active"] == state["queued"] == 0
    assert state["requests"]["/v1/embeddings"] == 6
    # No limit: the same requests overlap.
    control.reset()
    control.set_latency(300)
    assert control.state()["max_concurrent"] is None
    _embed_at_once(server_url, 6)
    assert control.state()["peak_active"] >= 3


def test_raising_max_concurrent_frees_queued_requests(server_url, control):
    control.configure(latency_ms=0, max_concurrent=1, fault="hang")
    done = threading.Thread(target=_embed_at_once, args=(server_url, 2))
    done.start()
    wait_until(lambda: control.state()["queued"] == 1, what="the second request to queue")
    control.configure(max_concurrent=2)          # the queued one gets a slot: both hang now
    wait_until(lambda: control.state()["active"] == 2, what="both requests served")
    control.set_fault("none")
    done.join(timeout=10)
    assert not done.is_alive()


def test_invalid_control_requests_are_rejected(control):
    with pytest.raises(ValueError, match="fault must be one of"):
        control.set_fault("explode")
    with pytest.raises(ValueError, match="together with 'fault'"):
        control.configure(count=2)
    with pytest.raises(ValueError, match="count"):
        control.set_fault("http500", count=0)
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="max_concurrent"):
            control.configure(max_concurrent=bad)


# --------------------------------------------------------------------------
# Other endpoints
# --------------------------------------------------------------------------

def test_chat_completions(client):
    prompt = "please summarise this rather long document about databases and vectors today"
    resp = client.chat.completions.create(
        model="fake-chat", messages=[{"role": "system", "content": "be brief"},
                                     {"role": "user", "content": prompt}])
    content = resp.choices[0].message.content
    assert content == fake_completion(prompt)
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == token_count(prompt) + 2
    assert resp.usage.completion_tokens == token_count(content)


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "text-embedding-3-small" in ids


def test_ollama_embed(web):
    texts = ["ollama one", "two"]
    resp = web.post("/api/embed", json={"model": "nomic-embed-text", "input": texts})
    body = resp.json()
    assert resp.status_code == 200 and body["model"] == "nomic-embed-text"
    assert_vectors(body["embeddings"], texts, dims=768, model="nomic-embed-text")
    assert body["prompt_eval_count"] == 3
    assert isinstance(body["total_duration"], int) and isinstance(body["load_duration"], int)
    single = web.post("/api/embed", json={"model": MODEL, "input": "solo"}).json()
    assert_vectors(single["embeddings"], ["solo"])


def test_ollama_legacy_embeddings_and_errors(web, control):
    body = web.post("/api/embeddings", json={"model": MODEL, "prompt": "legacy"}).json()
    assert_vectors([body["embedding"]], ["legacy"])
    resp = web.post("/api/embed", json={"model": REJECTED, "input": "x"})
    assert resp.status_code == 404
    assert resp.json() == {"error": f'model "{REJECTED}" not found, try pulling it first'}
    control.set_fault("http500", count=1)
    resp = web.post("/api/embed", json={"model": MODEL, "input": "x"})
    assert resp.status_code == 500 and isinstance(resp.json()["error"], str)


# --------------------------------------------------------------------------
# Control state, HTTP details, in-process API
# --------------------------------------------------------------------------

def test_control_state_counts_and_resets(client, control):
    started = time.monotonic()
    embed_ok(client, ["a", "b"])
    embed_ok(client, ["c"])
    state = control.state()
    assert state["requests"] == {"/v1/embeddings": 2}
    assert state["inputs_embedded"] == 3
    times = [t for r in state["recent"] for t in (r.pop("received"), r.pop("answered"))]
    # The server process's monotonic clock is system-wide: comparable with ours.
    assert times == sorted(times) and started <= times[0] and times[-1] <= time.monotonic()
    assert state["recent"] == [
        {"path": "/v1/embeddings", "method": "POST", "model": MODEL, "inputs": n,
         "status": 200, "fault": None} for n in (2, 1)]
    state = control.reset()
    assert state["requests"] == {} and state["recent"] == [] and state["inputs_embedded"] == 0


def test_keep_alive_and_chunked_bodies(server_url, control):
    host, port = server_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        bodies = [json.dumps({"model": MODEL, "input": "x"}).encode(),
                  iter([b'{"model": "', MODEL.encode(), b'", "input": "x"}'])]
        sockets = []
        for body in bodies:  # a plain body, then a chunked one, on one connection
            conn.request("POST", "/api/embed", body=body, encode_chunked=not isinstance(body, bytes))
            resp = conn.getresponse()
            assert resp.version == 11 and resp.status == 200
            assert_vectors(json.loads(resp.read())["embeddings"], ["x"])
            sockets.append(conn.sock)
        assert sockets[0] is sockets[1] is not None
    finally:
        conn.close()


def test_in_process_server_api():
    with ModelServer(dims=4, reject_models=["nope"]) as srv:
        url = srv.url + "/v1/embeddings"
        assert httpx.post(url, json={"input": "x", "model": "m"}).json()["data"][0]["embedding"] \
            == pytest.approx(fake_embedding("x", 4, "m"))
        assert httpx.post(url, json={"input": "x", "model": "nope"}).status_code == 404
        srv.set_fault("http500", count=1)
        assert httpx.post(url, json={"input": "x", "model": "m"}).status_code == 500
        assert srv.state()["fault"] == "none"
        srv.set_fault("hang")  # stop() must release a hanging request
        errors = []
        hung = threading.Thread(target=lambda: _post_expecting_error(url, errors))
        hung.start()
        wait_until(lambda: srv.state()["in_flight"] == 1, what="request hanging")
    hung.join(timeout=10)
    assert not hung.is_alive() and errors and isinstance(errors[0], httpx.TransportError)


def _post_expecting_error(url: str, errors: list) -> None:
    try:
        httpx.post(url, json={"input": "x", "model": "m"}, timeout=30)
    except httpx.HTTPError as exc:
        errors.append(exc)
