"""The OpenVINO backend of the bundled local models (`openvino`): the graph
`onnx_export.py` converted to OpenVINO's format at install time, on its CPU
plugin, fed by the shared tokenizer and batching of `exported_model.py`.

Precision: bfloat16 where the CPU computes it natively (OpenVINO lists BF16
among its capabilities: AVX512_BF16 or AMX), else float32. bfloat16 keeps
every text within cosine 0.9999 of the float graph and runs about 1.6x its
rate on such CPUs (docs/benchmarks.md, "Local model").
"""

import queue

import openvino

from .base import postgres_signals_blocked
from .exported_model import ExportedEncoder, cpu_count
from .onnx_export import OPENVINO_FILE


def cpu_precision(core):
    """bf16 where OpenVINO's CPU plugin computes it natively, else f32."""
    return "bf16" if "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES") else "f32"


class OpenVinoEncoder(ExportedEncoder):
    """One exported model compiled once per process. An InferRequest runs
    one pass at a time, so concurrent callers (an external worker's
    batches) each take one from a pool; OpenVINO releases the GIL while it
    computes."""

    def __init__(self, model_dir, threads=None):
        self._load_tokenizer(model_dir)
        core = openvino.Core()
        self.precision = cpu_precision(core)
        config = {"INFERENCE_PRECISION_HINT": self.precision,
                  "INFERENCE_NUM_THREADS": threads or cpu_count(),
                  "PERFORMANCE_HINT": "LATENCY",
                  # Other processes (every backend, the workers) share these
                  # cores: no thread of ours claims one for itself.
                  "ENABLE_CPU_PINNING": False}
        self._requests = queue.SimpleQueue()
        # The CPU plugin starts its thread pool when it compiles and on the
        # first pass, the tokenizer its own on the first batch: all must
        # leave PostgreSQL's signals to the backend's main thread.
        with postgres_signals_blocked():
            self.compiled = core.compile_model(str(model_dir / OPENVINO_FILE), "CPU", config)
            self._start_tokenizer_threads()
            self.encode(["start", "the runtime's threads"], 2)

    def _run(self, texts):
        """One inference over a padded batch, on a request of the pool."""
        try:
            request = self._requests.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            # Threads the plugin adds later inherit this mask too.
            with postgres_signals_blocked():
                return request.infer(self._inputs(texts))[0].copy()
        finally:
            self._requests.put(request)
