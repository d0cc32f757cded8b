"""The model layer: providers, their configuration checks, and a per-process
cache of ready-to-use model instances."""

import json

from ..errors import InvalidInput

PROVIDER_MODULES = {
    "openai_embeddings": ("openai_embeddings", "OpenAIEmbeddings"),
    "openai_completions": ("openai_completions", "OpenAICompletions"),
    "ollama_embeddings": ("ollama_embeddings", "OllamaEmbeddings"),
    "local_embeddings": ("local_embeddings", "LocalEmbeddings"),
    "hash_embeddings": ("hash_embeddings", "HashEmbeddings"),
}


def provider_class(provider):
    """The class implementing `provider`; imported lazily, since each pulls in
    heavy libraries (the SDK, torch) that other providers never need."""
    if provider not in PROVIDER_MODULES:
        raise InvalidInput(f'unknown model provider "{provider}"',
                           hint="Known providers: " + ", ".join(PROVIDER_MODULES) + ".")
    import importlib
    module_name, class_name = PROVIDER_MODULES[provider]
    module = importlib.import_module(f"{__name__}.{module_name}")
    return getattr(module, class_name)


def validate_model(name, provider, config, credentials):
    """Normalised config of a model about to be created; raises InvalidInput."""
    return provider_class(provider).validate(name, config, credentials)


class ModelCache:
    """Model instances of this process, rebuilt when their definition changes
    (so a fixed key or URL takes effect without reconnecting)."""

    def __init__(self):
        self._models = {}

    def get(self, name, provider, config, credentials):
        fingerprint = json.dumps([provider, config, credentials], sort_keys=True)
        cached = self._models.get(name)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        if cached is not None:
            cached[1].close()
        model = provider_class(provider)(name, config, credentials)
        self._models[name] = (fingerprint, model)
        return model
