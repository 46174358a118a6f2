"""`export=onnx` and `export=onnx_int8`: the trained model's transformer as an ONNX graph, run by ONNX Runtime.

The layout is sentence-transformers' own ONNX layout: the model directory without its torch weights
(config, tokenizer, `modules.json`, `1_Pooling/`, prompts) plus `onnx/model.onnx` (or
`onnx/model_qint8.onnx`), a graph from the token ids to the last hidden state. So
`SentenceTransformer(dir, backend="onnx")` loads it where `optimum` installs; with this project's pins
(transformers 5) optimum does not resolve, so the graph is written by `torch.onnx.export` and
quantized by `onnxruntime.quantization.quantize_dynamic`, and `encoder.GraphEncoder` runs it
(`OnnxRuntime` below) between the tokenizer and the model's pooling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

GRAPH = "onnx/model.onnx"
INT8_GRAPH = "onnx/model_qint8.onnx"
WEIGHTS = {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"}
SKIP = {"README.md"}  # the run's model card: about the run, not the weights


def copy_without_weights(model_dir: Path, out: Path) -> None:
    """The model directory's configs, tokenizer and pooling, not its torch weights (and no old graph)."""
    skip = WEIGHTS | SKIP | {"onnx", "openvino", "checkpoints"}
    shutil.copytree(model_dir, out, ignore=lambda _d, names: [n for n in names if n in skip])


def export_onnx(model_dir: Path, out: Path, opset: int) -> Path:
    """Write `out/onnx/model.onnx`: the transformer of the sentence-transformers model in `model_dir`,
    with batch and sequence axes left free."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    transformer = model[0]
    features = transformer.preprocess(["an example passage to trace", "a second one"])
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in features]

    class LastHidden(torch.nn.Module):
        def __init__(self, auto_model):
            super().__init__()
            self.auto_model = auto_model

        def forward(self, *inputs):
            return self.auto_model(**dict(zip(names, inputs)), return_dict=True).last_hidden_state

    copy_without_weights(model_dir, out)
    (out / "onnx").mkdir(exist_ok=True)
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with torch.no_grad():
        torch.onnx.export(
            LastHidden(transformer.auto_model.eval()),
            tuple(features[n] for n in names),
            str(out / GRAPH),
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "sequence"}},
            opset_version=opset,
            dynamo=False,
        )
    return out / GRAPH


def quantize_int8(source: Path, out: Path, per_channel: bool, reduce_range: bool) -> Path:
    """Write `out/onnx/model_qint8.onnx`: the graph in `source` with its weights in int8 (dynamic
    quantization: activations are quantized at run time, so no calibration data is needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    copy_without_weights(source, out)
    (out / "onnx").mkdir(exist_ok=True)
    quantize_dynamic(
        str(source / GRAPH),
        str(out / INT8_GRAPH),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
    )
    (out / GRAPH).unlink(missing_ok=True)
    return out / INT8_GRAPH


class OnnxRuntime:
    """An ONNX graph in ONNX Runtime on the CPU: `inputs` (the names it takes), call -> last hidden state."""

    def __init__(self, graph: Path):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, feed: dict) -> np.ndarray:
        return self.session.run(None, feed)[0]
