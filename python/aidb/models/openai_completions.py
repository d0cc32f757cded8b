"""Provider `openai_completions`: a chat model behind OpenAI's
/v1/chat/completions, or any server that speaks it (vLLM, LiteLLM, Ollama's
/v1, llama.cpp's server), through the official SDK. The SummarizeText step
uses it; it has the same options, credentials and retries as
`openai_embeddings`, plus max_tokens (OPTIONS below); its timeout defaults
to 120 s: generating text is slower than embedding it.
"""

import functools

from ..errors import PIPELINE_PERMANENT, RECORD_PERMANENT
from .base import Model
from ..options import Option
from .config import remote_endpoint_options
from .openai_embeddings import DEFAULT_URL, openai_client, provider_errors



class OpenAICompletions(Model):
    provider = "openai_completions"
    dimensions = None               # it makes text, not vectors
    OPTIONS = remote_endpoint_options(DEFAULT_URL, default_timeout=120) + (
        Option("max_tokens", "integer", "The cap on the answer's length the server is asked for.",
               minimum=1, maximum=1_000_000),)

    def __init__(self, name, config, credentials=None):
        super().__init__(name, config, credentials)
        self.client = openai_client(self)

    def complete(self, prompt, system=None):
        """The model's answer to `prompt` (the user message), after the
        instructions `system` if given; retried like every provider call."""
        messages = [{"role": "user", "content": prompt}]
        if system:
            messages.insert(0, {"role": "system", "content": system})
        [answer] = self.run_with_retries([functools.partial(self._chat, messages)])
        return answer

    def _chat(self, messages):
        extra = {}
        if self.config.get("max_tokens"):
            extra["max_tokens"] = self.config["max_tokens"]
        with provider_errors(self):
            response = self.client.chat.completions.create(
                model=self.config["model"], messages=messages, **extra)
        choice = response.choices[0] if response.choices else None
        content = choice.message.content if choice is not None else None
        if not content or not content.strip():
            reason = f" (finish_reason {choice.finish_reason})" if choice is not None else ""
            raise self.error(f"returned no text{reason}", category=RECORD_PERMANENT)
        return content.strip()

    def embed(self, texts):
        """A completion model used where an embedding model belongs."""
        raise self.error("is a chat-completions model (provider openai_completions); "
                         "it cannot embed text", category=PIPELINE_PERMANENT,
                         hint="Use a model of provider openai_embeddings, ollama_embeddings "
                              "or local_embeddings.")

    def close(self):
        super().close()
        self.client.close()
