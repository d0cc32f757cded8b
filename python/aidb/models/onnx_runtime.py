"""The ONNX Runtime backend of the bundled local models: the graph that
`onnx_export.py` wrote at install time, fed by the `tokenizers` package with
the model's own tokenizer.json. No torch, no sentence-transformers.

Where the exported files are: $AIDB_ONNX_DIR if set, else `onnx/` in the
installed engine's directory (ENGINE_DIR in the Makefile: this file is
ENGINE_DIR/engine/aidb/models/onnx_runtime.py).
"""

import json
import os
from pathlib import Path

from .base import postgres_signals_blocked
from .onnx_export import INT8_FILE, ONNX_FILE, SETTINGS_FILE, TOKENIZER_FILE

ONNX_DIR_VARIABLE = "AIDB_ONNX_DIR"


def exported_model_dir(model_name):
    """The directory holding the exported files of `model_name`."""
    root = os.environ.get(ONNX_DIR_VARIABLE) or Path(__file__).resolve().parents[3] / "onnx"
    return Path(root) / model_name


def cpu_count():
    """The cores this process may run on (its affinity mask, not the machine's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class OnnxEncoder:
    """One exported model in one InferenceSession, shared by the threads of
    a process (InferenceSession.run is thread-safe and releases the GIL)."""

    def __init__(self, model_dir, quantized=False, threads=None, providers=None):
        import onnxruntime
        from tokenizers import Tokenizer

        settings = json.loads((model_dir / SETTINGS_FILE).read_text())
        self.dimensions = settings["dimensions"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        # The same truncation as sentence-transformers (max_seq_length,
        # special tokens included); padding to the longest text of a batch.
        self.tokenizer.enable_truncation(max_length=settings["max_seq_length"])
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("[PAD]") or 0,
                                      pad_token="[PAD]")
        options = onnxruntime.SessionOptions()
        # One batch uses every core; batches of one process run one after
        # the other (a backend, a background worker) or share the cores.
        options.intra_op_num_threads = threads or cpu_count()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        path = model_dir / (INT8_FILE if quantized else ONNX_FILE)
        # ONNX Runtime starts its intra-op threads with the session, the
        # tokenizer its thread pool on the first batch: both must leave
        # PostgreSQL's signals to the backend's main thread.
        with postgres_signals_blocked():
            self.session = onnxruntime.InferenceSession(
                str(path), sess_options=options,
                providers=providers or ["CPUExecutionProvider"])
            self.tokenizer.encode_batch(["start", "the tokenizer's threads"])

    def encode(self, texts, batch_size):
        """Unit-length embeddings (numpy float32, len(texts) x dimensions),
        `batch_size` texts per run; texts sorted by length first, as
        sentence-transformers does, so that a batch pads little."""
        import numpy
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        result = numpy.empty((len(texts), self.dimensions), dtype=numpy.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            result[chunk] = self._run([texts[i] for i in chunk])
        return result

    def _run(self, texts):
        """One InferenceSession.run over a padded batch."""
        return self.session.run(["embedding"], self._inputs(texts))[0]

    def _inputs(self, texts):
        """The graph's inputs for `texts`: token ids and attention mask
        (int64, texts x tokens), padded to the longest text."""
        import numpy
        encodings = self.tokenizer.encode_batch(texts)
        return {"input_ids": numpy.array([e.ids for e in encodings], dtype=numpy.int64),
                "attention_mask": numpy.array([e.attention_mask for e in encodings],
                                              dtype=numpy.int64)}
