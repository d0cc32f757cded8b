"""A fake OpenAI- and Ollama-compatible model server for tests and benchmarks.

It speaks the real wire formats, so real clients (the `openai` package, libcurl,
httpx) can talk to it, and it answers with deterministic vectors from
fake_vectors.fake_embedding(text, dims, model) that tests can recompute.
Standard library only.

Endpoints
  POST /v1/embeddings        OpenAI embeddings ("float" or "base64" encoding)
  POST /v1/chat/completions  OpenAI chat; content = fake_completion(last user message)
  GET  /v1/models            OpenAI model list (the models of the dims table)
  POST /api/embed            Ollama embeddings (batch)
  POST /api/embeddings       Ollama legacy embeddings (one prompt)
  GET  /_control             fault settings + counters (see _Backend.state)
  POST /_control             change settings at run time, JSON body:
        {"fault": "none"|"http500"|"http429"|"hang"|"drop"|"bad200",
         "count": N|null,          # requests to affect, then back to "none"; null = until changed
         "retry_after": seconds,   # 429 only: sent as the Retry-After header (omitted if null)
         "hang_seconds": seconds,  # hang only: how long a request hangs (default 3600)
         "latency_ms": ms,         # added to every API request until changed (null = 0)
         "max_concurrent": N|null, # API requests served at once; the rest queue (null = no limit)
         "api_key": "K"|null}      # key now required on /v1 routes (null = no auth)
        Absent keys keep their value; count/retry_after/hang_seconds need "fault"
        and reset to their defaults whenever "fault" is given.
  POST /_control/reset       clear counters, faults and latency; restore the startup key
                             and the startup concurrency limit

Behaviour
  * /v1 routes require "Authorization: Bearer <key>" when a key is set (401
    invalid_api_key). Ollama routes never check it, like a real Ollama.
  * Models in the reject set answer 404 (OpenAI code model_not_found, or Ollama's
    'model "x" not found, try pulling it first').
  * An input containing "POISON" answers 400 invalid_request_error, so a pipeline
    can be tested with one permanently bad record.
  * Faults apply to API routes only (never to /_control), before authentication.
    "bad200" answers 200 with an error object instead of the route's result,
    as a misconfigured proxy can. "drop" closes the TCP connection without a
    response. "hang" holds the request until hang_seconds pass or the fault is
    changed by /_control (then the request is answered normally) or the server
    stops (then the connection is dropped).
  * Dimensions: the request's "dimensions", else MODEL_DIMS[model] (also tried
    without an Ollama ":tag"), else the server's default (--dims, 8).
  * "float" vectors are written with 9 significant digits (exact for float32);
    "base64" ones are little-endian float32, as OpenAI sends them.
  * Tokens are whitespace-separated words; token-id inputs become the ids joined
    by spaces.
  * state()["recent"] lists the last 50 API requests, oldest first: path,
    method, model, inputs, status (null: dropped), fault, and this process's
    time.monotonic() when the request had been read ("received") and when its
    answer was about to be written ("answered"; null: dropped). Linux's
    monotonic clock is system-wide, so gaps between a client's requests can
    be measured here (e.g. whether it waited for Retry-After). A request is
    logged (and leaves in_flight) before its answer is written or its
    connection dropped: a client that has its reply finds it here.
  * --cache (ModelServer(cache=True)): each OpenAI embedding is rendered once per
    (model, dims, encoding, text) and then served from memory, so that a
    benchmark warmed with its texts measures its client, not this server's
    CPU (hashing and float formatting cost milliseconds per request).
    state()["cached_vectors"] counts the entries (null without --cache).
  * --max-concurrent N (max_concurrent): a real inference server runs a fixed
    number of requests at once (its batch slots, GPUs or worker processes)
    and queues the rest. Here at most N API requests are inside their latency
    and answer at a time; the others wait in arrival order for a slot. The
    wait is on top of latency_ms, as it is for a client of a busy server.
    state() shows "active", "queued" and their peaks since the last reset.

Run:  python tests/support/model_server.py --port 0 --api-key K --dims 8 \
          --reject-model bad-model --port-file PATH [--cache] [--max-concurrent N]
Python:  with ModelServer(api_key="K") as srv: ... srv.url, srv.set_fault("http500", count=1)
Other process:  ModelServerControl(url).set_fault("hang"), .reset(), .state()
"""
from __future__ import annotations

import argparse
import base64
import functools
import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

try:  # imported as part of the `support` package
    from .fake_vectors import fake_completion, fake_embedding, token_count
except ImportError:  # run as a script: this directory is sys.path[0]
    from fake_vectors import fake_completion, fake_embedding, token_count

# Native sizes of well-known models; anything else gets the server's default dims.
MODEL_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
    "nomic-embed-text": 768,
    "mxbai-embed-large": 1024,
    "all-minilm": 384,
}
FAULTS = ("none", "http500", "http429", "hang", "drop", "bad200")
POISON_MARKER = "POISON"
DEFAULT_HANG_SECONDS = 3600.0
RECENT_LIMIT = 50          # requests kept in state()["recent"]
MAX_BATCH = 2048           # OpenAI's limit on inputs per embeddings request
_CONTROL_KEYS = {"fault", "count", "retry_after", "hang_seconds", "latency_ms", "api_key",
                 "max_concurrent"}
_FAULT_DETAIL_KEYS = ("count", "retry_after", "hang_seconds")


# --------------------------------------------------------------------------
# Errors and request parsing
# --------------------------------------------------------------------------

class ApiError(Exception):
    """An error answer, rendered in the wire format of the API that was called."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.code = status, message, type_, code
        self.headers = headers or {}

    def payload(self, flavor: str) -> dict:
        """OpenAI's {"error": {...}} object, or Ollama's {"error": "text"}."""
        if flavor == "ollama":
            return {"error": self.message}
        return {"error": {"message": self.message, "type": self.type,
                          "param": None, "code": self.code}}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _ids_to_text(ids: list[int]) -> str:
    """Token-id input becomes text: the ids joined by spaces (one token each)."""
    return " ".join(map(str, ids))


def _is_id_list(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(map(_is_int, value))


def _openai_texts(value: Any) -> list[str]:
    """Texts of an OpenAI `input`: str, list[str], list[int] or list[list[int]]."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return value
        if _is_id_list(value):
            return [_ids_to_text(value)]
        if all(map(_is_id_list, value)):
            return [_ids_to_text(v) for v in value]
    raise ApiError(400, "'input' must be a non-empty string, array of strings, "
                        "array of token ids or array of token-id arrays")


def _ollama_texts(value: Any) -> list[str]:
    """Texts of an Ollama /api/embed `input`: str or list[str] (absent = none)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise ApiError(400, "invalid input type: 'input' must be a string or array of strings")


def _count_inputs(body: dict) -> int:
    """How many inputs a request carries, for the request log (never raises)."""
    for key in ("input", "prompt"):
        value = body.get(key)
        if isinstance(value, list):
            return 1 if value and _is_int(value[0]) else len(value)
        if value is not None:
            return 1
    return 1 if "messages" in body else 0


def _check_poison(texts: list[str]) -> None:
    for i, text in enumerate(texts):
        if POISON_MARKER in text:
            raise ApiError(400, f"input {i} was rejected: it contains the {POISON_MARKER} marker")


def _json_object(raw: bytes) -> dict | None:
    """The request body as a dict ({} when empty), or None if it is not a JSON object."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _encode_vector(vec: list[float], encoding_format: str) -> list[float] | str:
    """OpenAI's "base64" encoding is little-endian float32; "float" is a JSON array."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode("ascii")
    return vec


class _RawJSON(str):
    """A JSON fragment rendered beforehand (a cached vector): _to_json writes it as is."""


@functools.lru_cache(maxsize=64)
def _float_array_format(length: int) -> str:
    return "[" + ",".join(["%.9g"] * length) + "]"


def _to_json(value: Any) -> str:
    """json.dumps, but float arrays (the vectors) are written with "%.9g".

    Nine significant digits round-trip float32 exactly (the real APIs return
    float32 values and pgvector stores float4), and "%" formatting is about 3x
    faster than json.dumps' float repr, the main CPU cost of a float response.
    """
    if isinstance(value, _RawJSON):
        return value
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{_to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        if value and type(value[0]) is float:
            return _float_array_format(len(value)) % tuple(value)
        return "[" + ",".join(map(_to_json, value)) + "]"
    return json.dumps(value)


def _retry_after_header(seconds: float | None) -> dict[str, str]:
    return {} if seconds is None else {"Retry-After": f"{seconds:g}"}


# --------------------------------------------------------------------------
# Shared server state: configuration, faults, counters
# --------------------------------------------------------------------------

@dataclass
class _FaultPlan:
    """The fault currently injected into API requests."""
    fault: str = "none"
    count: int | None = None          # requests left to affect; None = unlimited
    retry_after: float | None = None  # http429: Retry-After header value
    hang_seconds: float = DEFAULT_HANG_SECONDS


def _validate_control(body: Any) -> None:
    """Raise ValueError unless body is a valid POST /_control object."""
    if not isinstance(body, dict):
        raise ValueError("control body must be a JSON object")
    unknown = set(body) - _CONTROL_KEYS
    if unknown:
        raise ValueError(f"unknown control keys: {sorted(unknown)}")
    if "fault" in body and body["fault"] not in FAULTS:
        raise ValueError(f"fault must be one of {list(FAULTS)}")
    if "fault" not in body and any(body.get(k) is not None for k in _FAULT_DETAIL_KEYS):
        raise ValueError(f"{list(_FAULT_DETAIL_KEYS)} can only be set together with 'fault'")
    count = body.get("count")
    if count is not None and not (_is_int(count) and count >= 1):
        raise ValueError("count must be a positive integer or null")
    for key in ("retry_after", "hang_seconds", "latency_ms"):
        value = body.get(key)
        if value is not None and not (_is_number(value) and value >= 0):
            raise ValueError(f"{key} must be a non-negative number or null")
    if body.get("api_key") is not None and not isinstance(body["api_key"], str):
        raise ValueError("api_key must be a string or null")
    limit = body.get("max_concurrent")
    if limit is not None and not (_is_int(limit) and limit >= 1):
        raise ValueError("max_concurrent must be a positive integer or null")


class _Backend:
    """Everything the request handlers share; all mutable fields guarded by lock."""

    def __init__(self, api_key: str | None, dims: int, reject_models, model_dims, max_batch: int,
                 cache: bool = False, max_concurrent: int | None = None):
        self.initial_api_key = self.api_key = api_key
        self.initial_max_concurrent = max_concurrent
        self.dims = dims
        self.reject_models = frozenset(reject_models)
        self.model_dims = {**MODEL_DIMS, **(model_dims or {})}
        self.max_batch = max_batch
        self.lock = threading.Lock()
        self.stopping = threading.Event()   # set once by stop()
        self._wake = threading.Event()      # set (then replaced) to release hanging requests
        self._connections: set[socket.socket] = set()
        self.in_flight = 0                  # a gauge: reset() leaves it alone
        self.active = 0                     # requests holding a slot (gauge)
        self.queued = 0                     # requests waiting for one (gauge)
        self._slot_freed = threading.Condition(self.lock)
        self._next_ticket = self._serving_ticket = 0   # first come, first served
        # (model, dims, encoding, text) -> _RawJSON; reset() keeps it (it is not state
        # a test changes, only work saved). Plain dict operations are atomic under the GIL.
        self.vector_cache: dict[tuple, _RawJSON] | None = {} if cache else None
        self._clear()

    def _clear(self) -> None:
        """Reset faults, latency, key and counters (caller holds lock or is __init__)."""
        self.plan = _FaultPlan()
        self.latency_ms = 0.0
        self.api_key = self.initial_api_key
        self.max_concurrent = self.initial_max_concurrent
        self.peak_active = self.peak_queued = 0
        self.requests: dict[str, int] = {}
        self.inputs_embedded = 0
        self.faults_injected = 0
        self.recent: deque[dict] = deque(maxlen=RECENT_LIMIT)

    # ---- control ---------------------------------------------------------

    def configure(self, body: dict) -> dict:
        """Apply a POST /_control body (see the module docstring); returns state()."""
        _validate_control(body)
        with self.lock:
            if "fault" in body:
                hang = body.get("hang_seconds")
                self.plan = _FaultPlan(body["fault"], body.get("count"), body.get("retry_after"),
                                       DEFAULT_HANG_SECONDS if hang is None else hang)
                if self.plan.fault != "hang":
                    self._release_hangers()
            if "latency_ms" in body:
                self.latency_ms = body["latency_ms"] or 0.0
            if "api_key" in body:
                self.api_key = body["api_key"]
            if "max_concurrent" in body:
                self.max_concurrent = body["max_concurrent"]
                self._slot_freed.notify_all()      # a higher limit frees queued requests
        return self.state()

    def reset(self) -> dict:
        with self.lock:
            self._clear()
            self._release_hangers()
            self._slot_freed.notify_all()
        return self.state()

    def state(self) -> dict:
        with self.lock:
            return {
                "fault": self.plan.fault, "count": self.plan.count,
                "retry_after": self.plan.retry_after, "hang_seconds": self.plan.hang_seconds,
                "latency_ms": self.latency_ms, "api_key": self.api_key,
                "dims": self.dims, "reject_models": sorted(self.reject_models),
                "requests": dict(self.requests), "requests_total": sum(self.requests.values()),
                "inputs_embedded": self.inputs_embedded, "faults_injected": self.faults_injected,
                "in_flight": self.in_flight, "recent": list(self.recent),
                "max_concurrent": self.max_concurrent, "active": self.active,
                "queued": self.queued, "peak_active": self.peak_active,
                "peak_queued": self.peak_queued,
                "cached_vectors": None if self.vector_cache is None else len(self.vector_cache),
            }

    def _release_hangers(self) -> None:
        """Wake every request hanging now; later hangs wait on a fresh event."""
        self._wake.set()
        self._wake = threading.Event()

    # ---- per-request hooks -----------------------------------------------

    def take_fault(self) -> tuple[_FaultPlan, threading.Event] | None:
        """The fault for this request (counting it down), with the event ending a hang."""
        with self.lock:
            plan = self.plan
            if plan.fault == "none":
                return None
            if plan.count is not None:
                plan.count -= 1
                if plan.count <= 0:  # exhausted: later requests are served normally
                    self.plan = _FaultPlan()
            self.faults_injected += 1
            return replace(plan), self._wake

    def acquire_slot(self) -> None:
        """Wait, in arrival order, until fewer than max_concurrent requests
        are being served (at once without a limit, or when stopping)."""
        with self.lock:
            ticket = self._next_ticket
            self._next_ticket += 1
            if self._must_wait(ticket):
                self.queued += 1
                self.peak_queued = max(self.peak_queued, self.queued)
                while self._must_wait(ticket):
                    self._slot_freed.wait(0.5)   # stop() does not notify: re-check now and then
                self.queued -= 1
            self._serving_ticket += 1
            self._slot_freed.notify_all()        # the next ticket may fit too
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)

    def _must_wait(self, ticket: int) -> bool:
        """Earlier requests still wait, or every slot is taken (caller holds lock)."""
        if self.stopping.is_set():
            return False
        return ticket != self._serving_ticket or (
            self.max_concurrent is not None and self.active >= self.max_concurrent)

    def release_slot(self) -> None:
        with self.lock:
            self.active -= 1
            self._slot_freed.notify_all()

    def delay(self) -> None:
        """The configured per-request latency (cut short by stop())."""
        if self.latency_ms:
            self.stopping.wait(self.latency_ms / 1000.0)

    def begin(self, path: str) -> None:
        with self.lock:
            self.requests[path] = self.requests.get(path, 0) + 1
            self.in_flight += 1

    def finish(self, record: dict) -> None:
        with self.lock:
            self.in_flight -= 1
            self.recent.append(record)

    # ---- helpers for the route handlers ----------------------------------

    def check_auth(self, header: str | None) -> None:
        key = self.api_key
        if key is None or header == f"Bearer {key}":
            return
        message = ("You didn't provide an API key." if not header else
                   "Incorrect API key provided.")
        raise ApiError(401, message, code="invalid_api_key")

    def check_model(self, model: Any, flavor: str) -> str:
        if not isinstance(model, str) or not model:
            raise ApiError(400, "you must provide a model parameter")
        if model in self.reject_models:
            message = (f'model "{model}" not found, try pulling it first' if flavor == "ollama"
                       else f"The model `{model}` does not exist or you do not have access to it.")
            raise ApiError(404, message, code="model_not_found")
        return model

    def validate_texts(self, texts: list[str]) -> list[str]:
        if len(texts) > self.max_batch:
            raise ApiError(400, f"too many inputs: {len(texts)} > {self.max_batch}")
        if any(text == "" for text in texts):
            raise ApiError(400, "'input' cannot contain an empty string")
        _check_poison(texts)
        return texts

    def embed(self, texts: list[str], model: str, dimensions: Any) -> list[list[float]]:
        """fake_embedding for each text, counted in inputs_embedded."""
        dims = self._dims_for(model, dimensions)
        vectors = [fake_embedding(text, dims, model) for text in texts]
        with self.lock:
            self.inputs_embedded += len(texts)
        return vectors

    def embed_encoded(self, texts: list[str], model: str, dimensions: Any,
                      encoding_format: str) -> list:
        """embed(), each vector encoded for the response (_encode_vector); with the
        cache on, rendered to JSON once per (model, dims, encoding, text)."""
        if self.vector_cache is None:
            return [_encode_vector(v, encoding_format) for v in self.embed(texts, model, dimensions)]
        dims = self._dims_for(model, dimensions)
        fragments = []
        for text in texts:
            key = (model, dims, encoding_format, text)
            fragment = self.vector_cache.get(key)
            if fragment is None:
                vector = _encode_vector(fake_embedding(text, dims, model), encoding_format)
                fragment = self.vector_cache[key] = _RawJSON(_to_json(vector))
            fragments.append(fragment)
        with self.lock:
            self.inputs_embedded += len(texts)
        return fragments

    def _dims_for(self, model: str, dimensions: Any) -> int:
        if dimensions is None:
            table = self.model_dims
            return table.get(model) or table.get(model.split(":", 1)[0]) or self.dims
        if not (_is_int(dimensions) and dimensions >= 1):
            raise ApiError(400, "'dimensions' must be a positive integer")
        return dimensions

    # ---- connections -----------------------------------------------------

    def track(self, conn: socket.socket) -> None:
        with self.lock:
            self._connections.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self.lock:
            self._connections.discard(conn)

    def stop(self) -> None:
        """Release hanging requests and cut every open (e.g. idle keep-alive) connection."""
        self.stopping.set()
        with self.lock:
            self._release_hangers()
            connections = list(self._connections)
        for conn in connections:
            _shutdown_socket(conn)


def _shutdown_socket(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the peer


# --------------------------------------------------------------------------
# Route handlers: (backend, request body) -> response payload, or raise ApiError
# --------------------------------------------------------------------------

def _openai_embeddings(backend: _Backend, body: dict) -> dict:
    model = backend.check_model(body.get("model"), "openai")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ("float", "base64"):
        raise ApiError(400, "'encoding_format' must be 'float' or 'base64'")
    texts = backend.validate_texts(_openai_texts(body.get("input")))
    vectors = backend.embed_encoded(texts, model, body.get("dimensions"), encoding_format)
    data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
    tokens = sum(map(token_count, texts))
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _message_text(message: Any) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _last_user_text(messages: list) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _message_text(message)
    return _message_text(messages[-1])


def _chat_completions(backend: _Backend, body: dict) -> dict:
    model = backend.check_model(body.get("model"), "openai")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty array")
    if body.get("stream"):
        raise ApiError(400, "stream=true is not supported by the fake model server")
    prompt = _last_user_text(messages)
    _check_poison([prompt])
    content = fake_completion(prompt)
    prompt_tokens = sum(token_count(_message_text(m)) for m in messages)
    completion_tokens = token_count(content)
    return {
        "id": f"chatcmpl-fake{time.monotonic_ns()}", "object": "chat.completion",
        "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content, "refusal": None}}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens},
    }


def _list_models(backend: _Backend, body: dict) -> dict:
    return {"object": "list",
            "data": [{"id": name, "object": "model", "created": 0, "owned_by": "fake"}
                     for name in sorted(backend.model_dims)]}


def _ollama_embed(backend: _Backend, body: dict) -> dict:
    model = backend.check_model(body.get("model"), "ollama")
    texts = backend.validate_texts(_ollama_texts(body.get("input")))
    started = time.perf_counter_ns()
    vectors = backend.embed(texts, model, body.get("dimensions"))
    return {"model": model, "embeddings": vectors,
            "total_duration": time.perf_counter_ns() - started, "load_duration": 0,
            "prompt_eval_count": sum(map(token_count, texts))}


def _ollama_embeddings_legacy(backend: _Backend, body: dict) -> dict:
    model = backend.check_model(body.get("model"), "ollama")
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        raise ApiError(400, "'prompt' must be a string")
    [vector] = backend.embed(backend.validate_texts([prompt]), model, None)
    return {"embedding": vector}


@dataclass(frozen=True)
class _Route:
    method: str
    flavor: str                                   # "openai" (auth, OpenAI errors) or "ollama"
    handler: Callable[[_Backend, dict], dict]


_ROUTES = {
    "/v1/embeddings": _Route("POST", "openai", _openai_embeddings),
    "/v1/chat/completions": _Route("POST", "openai", _chat_completions),
    "/v1/models": _Route("GET", "openai", _list_models),
    "/api/embed": _Route("POST", "ollama", _ollama_embed),
    "/api/embeddings": _Route("POST", "ollama", _ollama_embeddings_legacy),
}


# --------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    """One connection; HTTP/1.1 keep-alive, every response has a Content-Length."""

    protocol_version = "HTTP/1.1"
    server_version = "FakeModelServer/1.0"
    disable_nagle_algorithm = True   # headers and body are separate writes

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request stderr output: it costs CPU in benchmarks

    def setup(self) -> None:
        super().setup()
        self.server.backend.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.backend.untrack(self.connection)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        try:
            raw = self._read_body()
        except ValueError as exc:
            self.close_connection = True  # the stream position is unknown now
            self._send_json(400, ApiError(400, str(exc)).payload("openai"))
            return
        if path == "/_control" or path.startswith("/_control/"):
            self._serve_control(path, raw)
        else:
            self._serve_api(path, raw)

    do_POST = do_GET

    # ---- request body ----------------------------------------------------

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length", "0")
        if not length.isdigit():
            raise ValueError(f"invalid Content-Length: {length!r}")
        return self.rfile.read(int(length))

    def _read_chunked(self) -> bytes:
        parts = []
        while (size := int(self.rfile.readline().split(b";", 1)[0], 16)) > 0:
            parts.append(self.rfile.read(size))
            self.rfile.readline()  # the CRLF closing each chunk
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass  # trailer headers
        return b"".join(parts)

    # ---- control endpoint ------------------------------------------------

    def _serve_control(self, path: str, raw: bytes) -> None:
        backend = self.server.backend
        try:
            if (self.command, path) == ("GET", "/_control"):
                result = backend.state()
            elif (self.command, path) == ("POST", "/_control"):
                result = backend.configure(_json_object(raw))
            elif (self.command, path) == ("POST", "/_control/reset"):
                result = backend.reset()
            else:
                raise ApiError(404, f"unknown control endpoint: {self.command} {path}")
        except ValueError as exc:
            result, status = ApiError(400, str(exc)).payload("openai"), 400
        except ApiError as err:
            result, status = err.payload("openai"), err.status
        else:
            status = 200
        self._send_json(status, result)

    # ---- API endpoints ---------------------------------------------------

    def _serve_api(self, path: str, raw: bytes) -> None:
        backend = self.server.backend
        route = _ROUTES.get(path)
        record = {"path": path, "method": self.command, "model": None, "inputs": 0,
                  "status": None, "fault": None, "received": time.monotonic(), "answered": None}
        backend.begin(path)
        try:
            reply = self._answer(route, path, raw, record)
        finally:
            # Logged before the client can see the answer (or the dropped
            # connection): whoever got a reply finds its request in the log.
            backend.finish(record)
        if reply is None:
            _shutdown_socket(self.connection)
        else:
            self._send_json(*reply)

    def _answer(self, route: _Route | None, path: str, raw: bytes,
                record: dict) -> tuple[int, Any, dict[str, str] | None] | None:
        """Latency, then a fault or the route's answer; fills in record.
        Returns (status, payload, headers) to send, or None to drop the connection."""
        body = _json_object(raw)
        if body is not None:
            record.update(model=body.get("model"), inputs=_count_inputs(body))
        backend = self.server.backend
        backend.acquire_slot()
        status, headers = 200, None
        try:
            backend.delay()
            if self._inject_fault(record):
                return None  # drop the connection: nothing to send
            payload = self._call_route(route, path, body)
        except ApiError as err:
            status, headers = err.status, err.headers
            payload = err.payload(route.flavor if route else "openai")
        finally:
            backend.release_slot()
        record["status"], record["answered"] = status, time.monotonic()
        return status, payload, headers

    def _inject_fault(self, record: dict) -> bool:
        """Apply the current fault; True if the connection is to be dropped."""
        backend = self.server.backend
        taken = backend.take_fault()
        if taken is None:
            return False
        plan, wake = taken
        record["fault"] = plan.fault
        if plan.fault == "http500":
            raise ApiError(500, "The server had an error while processing your request. "
                                "Sorry about that!", "server_error")
        if plan.fault == "http429":
            raise ApiError(429, "Rate limit reached for requests", "requests",
                           "rate_limit_exceeded", _retry_after_header(plan.retry_after))
        if plan.fault == "bad200":
            raise ApiError(200, "a 200 answer that is not the API's", "proxy_page")
        if plan.fault == "hang":
            wake.wait(plan.hang_seconds)
            if not backend.stopping.is_set():
                return False  # the outage ended: answer normally
        self.close_connection = True
        return True

    def _call_route(self, route: _Route | None, path: str, body: dict | None) -> dict:
        if route is None:
            raise ApiError(404, f"Invalid URL ({self.command} {path})", code="unknown_url")
        if self.command != route.method:
            raise ApiError(405, f"Method {self.command} not allowed for {path}")
        if route.flavor == "openai":
            self.server.backend.check_auth(self.headers.get("Authorization"))
        if body is None:
            raise ApiError(400, "the request body must be a JSON object")
        try:
            return route.handler(self.server.backend, body)
        except ApiError:
            raise
        except Exception as exc:  # a bug here: answer 500 rather than kill the connection
            raise ApiError(500, f"fake model server bug: {exc!r}", "server_error") from exc

    # ---- response ----------------------------------------------------------

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        data = _to_json(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. timed out)


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer (daemon threads) carrying the shared _Backend."""

    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, address: tuple[str, int], backend: _Backend):
        self.backend = backend
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse DNS lookup that can stall.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], OSError):  # peers vanishing is normal here
            super().handle_error(request, client_address)


# --------------------------------------------------------------------------
# Public Python API
# --------------------------------------------------------------------------

class _ControlAPI:
    """Fault helpers shared by the in-process server and the HTTP control client."""

    def configure(self, **fields: Any) -> dict:
        """Apply a POST /_control body; returns the new state; ValueError if invalid."""
        raise NotImplementedError

    def reset(self) -> dict:
        raise NotImplementedError

    def state(self) -> dict:
        raise NotImplementedError

    def set_fault(self, fault: str, count: int | None = None, retry_after: float | None = None,
                  latency_ms: float | None = None, hang_seconds: float | None = None) -> dict:
        """Inject `fault` into the next `count` API requests (None = until changed).
        latency_ms=None leaves the latency unchanged."""
        fields = {"fault": fault, "count": count, "retry_after": retry_after,
                  "hang_seconds": hang_seconds}
        if latency_ms is not None:
            fields["latency_ms"] = latency_ms
        return self.configure(**fields)

    def set_latency(self, latency_ms: float) -> dict:
        return self.configure(latency_ms=latency_ms)

    def set_max_concurrent(self, limit: int | None) -> dict:
        """Serve at most `limit` API requests at once, queueing the rest (None = no limit)."""
        return self.configure(max_concurrent=limit)

    def set_api_key(self, api_key: str | None) -> dict:
        """Require a different key on /v1 routes (None = no authentication)."""
        return self.configure(api_key=api_key)


class ModelServer(_ControlAPI):
    """The fake model server, served from a background thread of this process."""

    def __init__(self, port: int = 0, api_key: str | None = None, dims: int = 8,
                 reject_models=(), model_dims: dict[str, int] | None = None,
                 host: str = "127.0.0.1", max_batch: int = MAX_BATCH, cache: bool = False,
                 max_concurrent: int | None = None):
        self._address = (host, port)
        self._backend = _Backend(api_key, dims, reject_models, model_dims, max_batch, cache,
                                 max_concurrent)
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> "ModelServer":
        """Bind and start serving in a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("ModelServer already started")
        self._httpd = _HTTPServer(self._address, self._backend)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="fake-model-server", daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self._address[0]}:{self.port}"

    def configure(self, **fields: Any) -> dict:
        return self._backend.configure(fields)

    def reset(self) -> dict:
        return self._backend.reset()

    def state(self) -> dict:
        return self._backend.state()

    def stop(self) -> None:
        """Stop accepting, release hanging requests, close connections. Idempotent."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._backend.stop()
        self._httpd.server_close()
        self._thread.join()
        self._httpd = None

    def __enter__(self) -> "ModelServer":
        return self.start()

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()


class ModelServerControl(_ControlAPI):
    """Drives the /_control endpoint of a server running in another process."""

    def __init__(self, url: str, timeout: float = 10.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        # Loopback traffic must never go through an HTTP proxy from the environment.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def configure(self, **fields: Any) -> dict:
        return self._call("POST", "/_control", fields)

    def reset(self) -> dict:
        return self._call("POST", "/_control/reset", {})

    def state(self) -> dict:
        return self._call("GET", "/_control")

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as err:  # 400: invalid settings
            detail = _json_object(err.read()) or {}
            raise ValueError(detail.get("error", {}).get("message", str(err))) from err


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _model_dims_arg(text: str) -> tuple[str, int]:
    name, sep, dims = text.rpartition("=")
    if not sep or not name or not dims.isdigit() or int(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected NAME=DIMS, got {text!r}")
    return name, int(dims)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Ollama model server.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    parser.add_argument("--dims", type=int, default=8, help="dimensions of unlisted models")
    parser.add_argument("--reject-model", action="append", default=[], metavar="NAME",
                        help="answer 404 for this model (repeatable)")
    parser.add_argument("--model-dims", action="append", default=[], type=_model_dims_arg,
                        metavar="NAME=DIMS", help="add to the model dimensions table (repeatable)")
    parser.add_argument("--max-batch", type=int, default=MAX_BATCH)
    parser.add_argument("--cache", action="store_true",
                        help="render each OpenAI embedding once, then serve it from memory")
    parser.add_argument("--max-concurrent", type=int, metavar="N",
                        help="serve at most N API requests at once; the rest queue (no limit)")
    parser.add_argument("--port-file", help="write the bound port here once listening")
    return parser.parse_args(argv)


def _write_port_file(path: str, port: int) -> None:
    """Atomic write, so a poller never reads a half-written file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    # Block the stop signals before any thread starts (threads inherit the mask),
    # so that sigwait() below receives them in this thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    server = ModelServer(port=args.port, api_key=args.api_key, dims=args.dims,
                         reject_models=args.reject_model, model_dims=dict(args.model_dims),
                         host=args.host, max_batch=args.max_batch, cache=args.cache,
                         max_concurrent=args.max_concurrent).start()
    print(f"listening on {server.url}", flush=True)
    if args.port_file:
        _write_port_file(args.port_file, server.port)
    signal.sigwait(_STOP_SIGNALS)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
