"""The `export` group's schemas (one per target; `export=[onnx_int8,static]` selects several) and the
checks of their knobs. Kept cheap to import: `python -m runner --cfg job` reads it via `runner.config`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Optional

EXTRA = "pip install 'ragtune[export]'"
NEEDS = {
    "onnx": ("onnx", "onnxruntime"),
    "onnx_int8": ("onnx", "onnxruntime"),
    "openvino": ("onnx", "openvino"),
    "openvino_int8": ("onnx", "openvino", "nncf"),
    "static": ("model2vec",),
    "truncate": (),
}
PRESETS = ("performance", "mixed")


@dataclass
class OnnxExport:
    opset: int = 17  # ONNX opset of the graph (14 or more: the attention ops need it)
    fuse: bool = True  # BERT-family models: fuse attention, layer norms, GELU (ONNX Runtime's optimizer)


@dataclass
class OnnxInt8Export(OnnxExport):
    per_channel: bool = True  # one int8 scale per output channel of a weight, not one per tensor
    reduce_range: bool = True  # 7-bit weights: CPUs without VNNI (AVX2 only) saturate on full 8-bit products


@dataclass
class OpenVinoExport:
    opset: int = 17  # ONNX opset of the graph OpenVINO converts (14 or more)


@dataclass
class OpenVinoInt8Export(OpenVinoExport):
    calibration_texts: int = 300  # training passages whose activations set the int8 ranges (never eval)
    preset: str = "performance"  # NNCF: performance (symmetric activations) | mixed (asymmetric: more accurate)


@dataclass
class StaticExport:
    pca_dims: Optional[int] = 256  # PCA width of the token vectors; null keeps the model's width


@dataclass
class TruncateExport:
    dim: int = 128  # the width the saved model encodes to (a Matryoshka width: see the dimensions table)


EXPORT = {
    "onnx": OnnxExport,
    "onnx_int8": OnnxInt8Export,
    "openvino": OpenVinoExport,
    "openvino_int8": OpenVinoInt8Export,
    "static": StaticExport,
    "truncate": TruncateExport,
}


def missing_packages(target: str) -> list[str]:
    return [m for m in NEEDS[target] if importlib.util.find_spec(m) is None]


def problems(cfg) -> list[str]:
    """Known targets, their knobs, and their libraries installed: found before anything is computed."""
    p: list[str] = []
    if cfg.get("export") and not cfg.finetune.get("_target_"):
        p.append(f"export={','.join(cfg.export)} exports the trained model, and finetune=none trains none: drop export or train")
    if cfg.get("export") and str(cfg.finetune.get("_target_", "")).endswith(".train_adapter"):
        p.append(
            f"export={','.join(cfg.export)} converts a trained SentenceTransformer model, and finetune=adapter trains a "
            "LlamaIndex adapter over the base model instead (load it with ragtune.load_retriever): drop export, or "
            "train with finetune=sentence_transformers"
        )
    for target, spec in (cfg.get("export") or {}).items():
        if target not in EXPORT:
            p.append(f"export.{target} is not an export target: choose from {', '.join(EXPORT)} (export=[onnx_int8,static])")
            continue
        if "opset" in spec and spec.opset < 14:
            p.append(f"export.{target}.opset={spec.opset} is too old for the attention ops: use 14 or more (17 is the default)")
        if target == "static" and spec.pca_dims is not None and spec.pca_dims < 2:
            p.append(f"export.static.pca_dims={spec.pca_dims} must be 2 or more, or null to keep the model's width")
        if target == "openvino_int8" and spec.calibration_texts < 1:
            p.append(f"export.openvino_int8.calibration_texts={spec.calibration_texts} must be 1 or more (300 is the default)")
        if target == "openvino_int8" and spec.preset not in PRESETS:
            p.append(f"export.openvino_int8.preset={spec.preset!r} is not an NNCF preset: use {' or '.join(PRESETS)}")
        if target == "truncate" and spec.dim < 1:
            p.append(f"export.truncate.dim={spec.dim} must be 1 or more: a width from the dimensions table, e.g. 128")
        missing = missing_packages(target)
        if missing:
            p.append(f"export={target} needs {', '.join(missing)}, which is not installed: {EXTRA}")
    return p
