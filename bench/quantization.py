#!/usr/bin/python3
"""Can an int8 `minilm` be both faster and within cosine 0.99 of the float
model on every text? Each variant of ONNX Runtime's dynamic quantization
(per channel, some operators or nodes left in float) against the installed
float export: the lowest, 1st-percentile and median cosine over ~600 texts
(60-word texts, 8-25-word sentences, and a few very short or very long
ones), and its speed over the float model's, taking turns, median of 3.

    /usr/bin/python3 bench/quantization.py [--engine-dir DIR]

Runs with the engine's own Python and dependencies (no database; not in
run_all.py). The float export is within 0.9999 of torch
(tests/test_local_model_backends.py), so cosine against it stands for cosine
against torch. Results: printed, and bench/results/quantization-<date>.json.
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ENGINE_DIR = "/usr/lib/postgresql/15/lib/aidb/python"
MODEL = "all-MiniLM-L6-v2"
ROUNDS = 3


def variants(matmuls):
    """{name: quantize_dynamic keyword arguments}; "shipped" is onnx_export.py's."""
    ffn_down = [n for n in matmuls if "/output/dense" in n and "attention" not in n]
    attention_out = [n for n in matmuls if "attention" in n]
    return {"shipped (every supported operator)": {},
            "MatMul only (attention and embeddings in float)": {"op_types_to_quantize": ["MatMul"]},
            "MatMul and Attention": {"op_types_to_quantize": ["MatMul", "Attention"]},
            "MatMul, FFN down-projections in float": {"op_types_to_quantize": ["MatMul"],
                                                      "nodes_to_exclude": ffn_down},
            "FFN MatMuls only": {"op_types_to_quantize": ["MatMul"],
                                 "nodes_to_exclude": attention_out}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine-dir", default=DEFAULT_ENGINE_DIR,
                        help=f"the installed engine (default {DEFAULT_ENGINE_DIR})")
    args = parser.parse_args()
    sys.path[:0] = [os.path.join(args.engine_dir, "deps"), os.path.join(args.engine_dir, "engine"), HERE]
    import numpy
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from aidb.models.onnx_runtime import OnnxEncoder
    from common import make_sentences, make_texts, save_json, utc_date

    source = Path(args.engine_dir) / "onnx" / MODEL
    matmuls = [n.name for n in onnx.load(str(source / "model.onnx")).graph.node if n.op_type == "MatMul"]
    texts = make_texts(300) + make_sentences(300, seed=3) + ["ok", "a b", "Hello world!", "word " * 300]
    timed_texts = make_texts(400)
    reference = OnnxEncoder(source)
    expected = reference.encode(texts, 32)
    results = {}
    for name, options in variants(matmuls).items():
        with tempfile.TemporaryDirectory(prefix="aidb-quant-") as work:
            for f in source.iterdir():
                if f.suffix != ".onnx":
                    shutil.copy(f, os.path.join(work, f.name))
            quantize_dynamic(str(source / "model.onnx"), os.path.join(work, "model-int8.onnx"),
                             weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT}, **options)
            encoder = OnnxEncoder(Path(work), quantized=True)
            found = encoder.encode(texts, 32)
            cosines = (found * expected).sum(1) / numpy.linalg.norm(found, axis=1) \
                / numpy.linalg.norm(expected, axis=1)
            speedups = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                encoder.encode(timed_texts, 32)
                middle = time.perf_counter()
                reference.encode(timed_texts, 32)
                speedups.append((time.perf_counter() - middle) / (middle - started))
        results[name] = {"min_cosine": round(float(cosines.min()), 4),
                         "p1_cosine": round(float(numpy.percentile(cosines, 1)), 4),
                         "median_cosine": round(float(numpy.median(cosines)), 4),
                         "speed_over_float": round(statistics.median(speedups), 2),
                         "rounds": [round(s, 2) for s in speedups]}
        print(f"{name}: {results[name]}", flush=True)
    path = os.path.join(HERE, "results", f"quantization-{utc_date()}.json")
    save_json({"name": "quantization", "date": utc_date(), "texts": len(texts), "model": MODEL,
               "variants": results}, path)
    print(f"results: {os.path.relpath(path, os.path.dirname(HERE))}")


if __name__ == "__main__":
    sys.exit(main())
