"""The ONNX Runtime backend of the bundled local models (`onnx`,
`onnx-int8`): the fused graph that `onnx_export.py` wrote at install time,
fed by the shared tokenizer and batching of `exported_model.py`.
"""

from .base import postgres_signals_blocked
from .exported_model import ExportedEncoder, cpu_count
from .onnx_export import INT8_FILE, ONNX_FILE


class OnnxEncoder(ExportedEncoder):
    """One exported model in one InferenceSession, shared by the threads of
    a process (InferenceSession.run is thread-safe and releases the GIL)."""

    def __init__(self, model_dir, quantized=False, threads=None, providers=None):
        import onnxruntime

        self._load_tokenizer(model_dir)
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
            self._start_tokenizer_threads()

    def _run(self, texts):
        """One InferenceSession.run over a padded batch."""
        return self.session.run(["embedding"], self._inputs(texts))[0]
