"""`export=onnx` and `export=onnx_int8`: the trained model's transformer as an ONNX graph, run by ONNX Runtime.

The layout is sentence-transformers' own ONNX layout: the model directory without its torch weights
(config, tokenizer, `modules.json`, `1_Pooling/`, prompts) plus `onnx/model.onnx` (or
`onnx/model_qint8.onnx`), a graph from the token ids to the last hidden state. So
`SentenceTransformer(dir, backend="onnx")` loads it where `optimum` installs; with this project's pins
(transformers 5) optimum does not resolve, so the graph is written by `torch.onnx.export` and
quantized by `onnxruntime.quantization.quantize_dynamic`, and `encoder.GraphEncoder` runs it
(`OnnxRuntime` below) between the tokenizer and the model's pooling.

For BERT-family models (`FUSABLE`) the graph is traced with eager attention and rewritten by ONNX
Runtime's transformer optimizer, as optimum's `ORTOptimizer` does: each layer's attention becomes
one `Attention` node (then `QAttention` in int8), layer norms and GELU fused too, so the attention
matrices are no longer separate tensors of the graph; the fused graph must give the plain graph's
numbers on the trace texts or the export fails. What was fused is in `onnx/fusions.json`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

GRAPH = "onnx/model.onnx"
INT8_GRAPH = "onnx/model_qint8.onnx"
WEIGHTS = {"model.safetensors", "pytorch_model.bin", "model.safetensors.index.json"}
SKIP = {"README.md"}  # the run's model card: about the run, not the weights
FUSIONS = "onnx/fusions.json"
# model types whose layers ONNX Runtime's optimizer fuses as BERT's (optimum's ORTConfigManager's table)
FUSABLE = {"bert", "roberta", "xlm-roberta", "camembert", "distilbert", "electra", "mpnet"}
FUSED_TOLERANCE = 1e-3  # the largest |difference| of a hidden state between the fused and the plain graph


def copy_without_weights(model_dir: Path, out: Path) -> None:
    """The model directory's configs, tokenizer and pooling, not its torch weights (and no old graph)."""
    skip = WEIGHTS | SKIP | {"onnx", "openvino", "checkpoints"}
    shutil.copytree(model_dir, out, ignore=lambda _d, names: [n for n in names if n in skip])


def export_onnx(model_dir: Path, out: Path, opset: int, fuse: bool = False) -> Path:
    """Write `out/onnx/model.onnx`: the transformer of the sentence-transformers model in `model_dir`,
    with batch and sequence axes left free; with `fuse`, a BERT-family model's layers fused."""
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    transformer = model[0]
    config = transformer.auto_model.config
    fuse = fuse and config.model_type in FUSABLE
    if fuse:  # the attention pattern the optimizer recognizes (SDPA's traced graph is not)
        transformer.auto_model.set_attn_implementation("eager")
    features = transformer.preprocess(["an example passage to trace", "a second, somewhat longer one, padded"])
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
    if fuse:
        feed = {n: features[n].numpy().astype(np.int64) for n in names}
        fusions = fuse_layers(out / GRAPH, config.num_attention_heads, config.hidden_size, feed)
    else:
        fusions = {}
    (out / FUSIONS).write_text(json.dumps({"model_type": config.model_type, "fused": fusions}, indent=1))
    return out / GRAPH


def fuse_layers(graph: Path, heads: int, hidden: int, feed: dict) -> dict:
    """Rewrite `graph` with ONNX Runtime's transformer optimizer (BERT fusions: attention, embedding
    and skip layer norms, bias GELU); the fused operators and how many of each. The fused graph's
    output on `feed` must equal the plain graph's, or this fails (set the target's `fuse=false`)."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = optimize_model(str(graph), model_type="bert", num_heads=heads, hidden_size=hidden, opt_level=0)
    counts = {op: n for op, n in fused.get_fused_operator_statistics().items() if n}
    plain = OnnxRuntime(graph)(feed)
    fused.save_model_to_file(str(graph))
    gap = float(np.abs(OnnxRuntime(graph)(feed) - plain).max())
    if gap > FUSED_TOLERANCE:
        raise ValueError(
            f"ONNX Runtime's fused graph differs from the plain one by {gap:.2g} on the trace texts "
            f"(tolerance {FUSED_TOLERANCE}): export it unfused with export.<target>.fuse=false"
        )
    return counts


def quantize_int8(source: Path, out: Path, per_channel: bool, reduce_range: bool) -> Path:
    """Write `out/onnx/model_qint8.onnx`: the graph in `source` with its weights in int8 (dynamic
    quantization: activations are quantized at run time, so no calibration data is needed)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    copy_without_weights(source, out)
    (out / "onnx").mkdir(exist_ok=True)
    if (source / FUSIONS).exists():
        shutil.copy(source / FUSIONS, out / FUSIONS)
    quantize_dynamic(
        str(source / GRAPH),
        str(out / INT8_GRAPH),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
        extra_options={"DefaultTensorType": 1},  # float: the fused ops' outputs have no inferred type
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
