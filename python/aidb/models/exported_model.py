"""What the runtimes of the install-time export share (`onnx_runtime.py`,
`openvino_runtime.py`): where the exported files are, the tokenizer that
feeds them, and the chunking of a request into forward passes. No torch, no
sentence-transformers.

Where the exported files are: $AIDB_ONNX_DIR if set, else `onnx/` in the
installed engine's directory (ENGINE_DIR in the Makefile: this file is
ENGINE_DIR/engine/aidb/models/exported_model.py).
"""

import json
import os
from pathlib import Path

from .onnx_export import SETTINGS_FILE, TOKENIZER_FILE

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


class ExportedEncoder:
    """An exported model's tokenizer and batching; a subclass runs the
    forward pass (`_run`) on its runtime and must call `_load_tokenizer`."""

    def _load_tokenizer(self, model_dir):
        """The model's own tokenizer.json, truncating and padding as
        sentence-transformers does (max_seq_length, special tokens included;
        padded to the longest text of a batch)."""
        from tokenizers import Tokenizer

        settings = json.loads((model_dir / SETTINGS_FILE).read_text())
        self.dimensions = settings["dimensions"]
        self.tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
        self.tokenizer.enable_truncation(max_length=settings["max_seq_length"])
        self.tokenizer.enable_padding(pad_id=self.tokenizer.token_to_id("[PAD]") or 0,
                                      pad_token="[PAD]")

    def _start_tokenizer_threads(self):
        """The tokenizer starts its thread pool on its first batch: called
        by a subclass inside postgres_signals_blocked."""
        self.tokenizer.encode_batch(["start", "the tokenizer's threads"])

    def encode(self, texts, batch_size):
        """Unit-length embeddings (numpy float32, len(texts) x dimensions),
        `batch_size` texts per forward pass; texts sorted by length first,
        as sentence-transformers does, so that a batch pads little."""
        import numpy
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        result = numpy.empty((len(texts), self.dimensions), dtype=numpy.float32)
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            result[chunk] = self._run([texts[i] for i in chunk])
        return result

    def _run(self, texts):
        """One forward pass over `texts`: their embeddings."""
        raise NotImplementedError

    def _inputs(self, texts):
        """The graph's inputs for `texts`: token ids and attention mask
        (int64, texts x tokens), padded to the longest text."""
        import numpy
        encodings = self.tokenizer.encode_batch(texts)
        return {"input_ids": numpy.array([e.ids for e in encodings], dtype=numpy.int64),
                "attention_mask": numpy.array([e.attention_mask for e in encodings],
                                              dtype=numpy.int64)}
