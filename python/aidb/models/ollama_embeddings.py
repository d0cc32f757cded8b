"""Provider `ollama_embeddings`: Ollama's native API (POST /api/embed) over httpx."""

import httpx

from .base import EmbeddingModel
from .config import embedding_batch_options, remote_endpoint_options, resolve_api_key
from ..options import Option
from .retry import TransientFailure, parse_retry_after
from ..redact import redact

DEFAULT_URL = "http://127.0.0.1:11434"


class OllamaEmbeddings(EmbeddingModel):
    provider = "ollama_embeddings"
    default_max_batch_size = 64
    default_max_concurrent_requests = 1   # a local Ollama serves one request at a time
    # Credentials are optional: for an Ollama behind an authenticating proxy.
    OPTIONS = (remote_endpoint_options(DEFAULT_URL, default_timeout=120)
               + embedding_batch_options(default_max_batch_size, default_max_concurrent_requests)
               + (Option("keep_alive", "string",
                         "How long Ollama keeps the model loaded (such as \"5m\")."),))

    def __init__(self, name, config, credentials=None):
        super().__init__(name, config, credentials)
        api_key = resolve_api_key(name, self.credentials)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=config["url"], headers=headers,
                                   timeout=config["timeout"])

    def _embed_batch(self, texts):
        body = {"model": self.config["model"], "input": texts}
        if "keep_alive" in self.config:
            body["keep_alive"] = self.config["keep_alive"]
        try:
            response = self.client.post("/api/embed", json=body)
        except httpx.TimeoutException:
            raise TransientFailure(f"no answer within {self.config['timeout']} s") from None
        except (httpx.LocalProtocolError, UnicodeEncodeError):
            raise self.unsendable_request() from None
        except httpx.TransportError as exc:
            raise TransientFailure(f"connection failed: {exc}") from None
        if response.status_code != 200:
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            raise self.http_failure(response.status_code, _error_message(response), retry_after)
        try:
            embeddings = response.json()["embeddings"]
        except (ValueError, TypeError, KeyError):
            embeddings = None
        if not isinstance(embeddings, list):
            raise self.unusable_answer('"embeddings" list', response)
        return embeddings

    def close(self):
        super().close()
        self.client.close()


def _error_message(response):
    try:
        return str(response.json().get("error") or response.text)
    except ValueError:
        return redact(response.text)[:200]      # cut after redacting, never across a key
