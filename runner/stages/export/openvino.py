"""`export=openvino` and `export=openvino_int8`: the trained model's transformer as OpenVINO IR.

The layout is sentence-transformers' OpenVINO layout: the model directory without its torch weights
plus `openvino/openvino_model.xml` (and `.bin`), or `openvino/openvino_model_qint8_quantized.xml`.
sentence-transformers writes these through optimum-intel, which does not resolve next to this
project's pins (it moves transformers and torch), so the IR is converted by `openvino.convert_model`
from the ONNX graph of `export=onnx` (the same trace; faster here than converting the torch module),
and int8 is NNCF's post-training static quantization (`nncf.quantize`, the method of
`export_static_quantized_openvino_model`): weights and activations in int8, the activations' ranges
calibrated on passages of the run's training pairs, never on the eval set.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from runner.stages.export.model_files import max_seq_length
from runner.stages.export.onnx import GRAPH, copy_without_weights, export_onnx

IR = "openvino/openvino_model.xml"
INT8_IR = "openvino/openvino_model_qint8_quantized.xml"
CALIBRATION_BATCH = 8  # texts in one calibration sample


def export_openvino(model_dir: Path, out: Path, opset: int) -> Path:
    """Write `out/openvino/openvino_model.xml`: the model's transformer in fp32 (weights not halved),
    batch and sequence axes free."""
    return _save(_convert(model_dir, opset), model_dir, out, IR)


def quantize_openvino_int8(model_dir: Path, out: Path, opset: int, texts: list[str], preset: str) -> Path:
    """Write `out/openvino/openvino_model_qint8_quantized.xml`: the IR with int8 weights and
    activations, their ranges calibrated on `texts` (tokenized as the model tokenizes passages)."""
    import nncf
    from transformers import AutoTokenizer

    if not texts:
        raise ValueError("export=openvino_int8 calibrates on the run's training passages, and this run has none")
    model = _convert(model_dir, opset)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    window = max_seq_length(model_dir, tokenizer)  # the lengths the model serves, as GraphEncoder cuts them
    names = {i.get_any_name() for i in model.inputs}
    samples = []
    for start in range(0, len(texts), CALIBRATION_BATCH):
        batch = texts[start : start + CALIBRATION_BATCH]
        enc = tokenizer(batch, padding=True, truncation=True, max_length=window, return_tensors="np")
        samples.append({k: v.astype(np.int64) for k, v in enc.items() if k in names})
    quantized = nncf.quantize(
        model,
        nncf.Dataset(samples),
        preset=nncf.QuantizationPreset[preset.upper()],
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(samples),
    )
    return _save(quantized, model_dir, out, INT8_IR)


def _convert(model_dir: Path, opset: int):
    import openvino as ov

    with tempfile.TemporaryDirectory(prefix="ragtune-onnx-") as tmp:
        export_onnx(model_dir, Path(tmp) / "onnx", opset)
        return ov.convert_model(str(Path(tmp) / "onnx" / GRAPH))


def _save(model, model_dir: Path, out: Path, name: str) -> Path:
    import openvino as ov

    copy_without_weights(model_dir, out)
    (out / name).parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out / name), compress_to_fp16=False)
    return out / name


class OpenVinoRuntime:
    """An IR compiled by OpenVINO for the CPU: `inputs` (the names it takes), call -> last hidden state."""

    def __init__(self, graph: Path):
        import openvino as ov

        compiled = ov.Core().compile_model(str(graph), "CPU")
        self.inputs = {i.get_any_name() for i in compiled.inputs}
        self.request, self.output = compiled.create_infer_request(), compiled.output(0)

    def __call__(self, feed: dict) -> np.ndarray:
        return self.request.infer(feed)[self.output]
