"""Provider `openai_embeddings`: OpenAI's /v1/embeddings, and any server that
speaks it (vLLM, TEI, LiteLLM, Ollama's /v1), through the official SDK."""

import base64
import contextlib

import httpx
import openai

from ..pgvector import float4_array, float4_array_from_bytes
from .base import EmbeddingModel
from .config import embedding_batch_options, remote_endpoint_options, resolve_api_key
from .retry import TransientFailure, parse_retry_after

DEFAULT_URL = "https://api.openai.com/v1"

# Output sizes of OpenAI's own models, so that a pipeline can size its
# destination column without a round trip.
KNOWN_DIMENSIONS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}



class OpenAIEmbeddings(EmbeddingModel):
    provider = "openai_embeddings"
    default_max_batch_size = 256
    default_max_concurrent_requests = 8
    OPTIONS = (remote_endpoint_options(DEFAULT_URL, default_timeout=60)
               + embedding_batch_options(default_max_batch_size, default_max_concurrent_requests))

    def __init__(self, name, config, credentials=None):
        super().__init__(name, config, credentials)
        self.client = openai_client(self)

    @property
    def dimensions(self):
        return self.config.get("dimensions") or KNOWN_DIMENSIONS.get(self.config["model"])

    def _embed_batch(self, texts):
        extra = {}
        if self.config.get("dimensions"):
            extra["dimensions"] = self.config["dimensions"]
        # base64 is what the SDK asks for by default too; asked for by name,
        # the SDK hands it over undecoded and we skip a list of floats. The
        # raw response skips the SDK's pydantic objects (one per vector):
        # they were 15 % of an external worker's Python time at 0 ms latency
        # (py-spy, bench/profile_drain.py).
        with provider_errors(self):
            response = self.client.embeddings.with_raw_response.create(
                model=self.config["model"], input=texts, encoding_format="base64", **extra)
            items = _embedding_items(self, response.http_response)
        ordered = sorted(items, key=lambda item: item["index"])
        return [_vector(item["embedding"]) for item in ordered]

    def close(self):
        super().close()
        self.client.close()


def _embedding_items(model, http_response):
    """The "data" items of an embeddings answer, each with its index."""
    try:
        items = http_response.json()["data"]
        if all(isinstance(item["index"], int) and isinstance(item["embedding"], (str, list))
               for item in items):
            return items
    except (ValueError, TypeError, KeyError):
        pass
    raise model.unusable_answer('"data" list of embeddings', http_response)


def _vector(embedding):
    """An array('f') from base64 float4s, or from floats (servers that ignore
    encoding_format answer with those)."""
    if isinstance(embedding, str):
        return float4_array_from_bytes(base64.b64decode(embedding))
    return float4_array(embedding)


def openai_client(model):
    """An SDK client for the url and key of `model` (a base.Model with
    "url" and "timeout" options)."""
    api_key = resolve_api_key(model.name, model.credentials)
    # Retries are ours (base.Model.run_with_retries), so the SDK must not add its own.
    return openai.OpenAI(
        # OpenAI-compatible servers often need no key; the SDK insists on one.
        api_key=api_key or "no-key",
        base_url=model.config["url"],
        max_retries=0,
        timeout=model.config["timeout"],
        http_client=httpx.Client(timeout=model.config["timeout"]),
    )


@contextlib.contextmanager
def provider_errors(model):
    """Turn the SDK's exceptions into a retry (TransientFailure) or the
    engine's error for the HTTP status (base.Model.http_failure)."""
    try:
        yield
    except openai.APIStatusError as exc:
        retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
        raise model.http_failure(exc.status_code, _error_message(exc), retry_after) from None
    except openai.APITimeoutError:
        raise TransientFailure(f"no answer within {model.config['timeout']} s") from None
    except openai.APIConnectionError as exc:
        if isinstance(exc.__cause__, (httpx.LocalProtocolError, UnicodeEncodeError)):
            raise model.unsendable_request() from None
        raise TransientFailure(f"connection failed: {exc.__cause__ or exc}") from None
    except UnicodeEncodeError:      # httpx encodes headers as ASCII, before any connection
        raise model.unsendable_request() from None


def _error_message(exc):
    """The provider's own error message, without the SDK's decoration."""
    body = exc.body if isinstance(exc.body, dict) else {}
    return str(body.get("message") or exc.message)
