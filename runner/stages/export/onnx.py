"""`export=onnx` and `export=onnx_int8`: the trained model's transformer as an ONNX graph, run by ONNX Runtime.

The layout is sentence-transformers' own ONNX layout: the model directory without its torch weights
(config, tokenizer, `modules.json`, `1_Pooling/`, prompts) plus `onnx/model.onnx` (or
`onnx/model_qint8.onnx`), a graph from the token ids to the last hidden state. So
`SentenceTransformer(dir, backend="onnx")` loads it where `optimum` installs; with this project's pins
(transformers 5) optimum does not resolve, so the graph is written by `torch.onnx.export` and
quantized by `onnxruntime.quantization.quantize_dynamic`, and `OnnxEncoder` runs it: the
tokenizer, ONNX Runtime, then the pooling and normalization the model's own `1_Pooling/config.json`
names.
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


def copy_without_weights(model_dir: Path, out: Path) -> None:
    """The model directory's configs, tokenizer and pooling, not its torch weights (and no old graph)."""
    skip = WEIGHTS | SKIP | {"onnx", "checkpoints"}
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


def graph_of(path: Path) -> Path | None:
    """The ONNX graph an export directory holds (the int8 one first), or None."""
    return next((Path(path) / g for g in (INT8_GRAPH, GRAPH) if (Path(path) / g).exists()), None)


class _Device:
    type = "cpu"


class OnnxEncoder:
    """A sentence-transformers-like encoder over an exported directory: `encode_query`,
    `encode_document` (with the model's prompts), `max_seq_length`, `device.type`."""

    def __init__(self, path: str | Path):
        import onnxruntime as ort
        from transformers import AutoTokenizer

        self.path = Path(path)
        graph = graph_of(self.path)
        if graph is None:
            raise FileNotFoundError(f"{self.path} holds no {GRAPH} or {INT8_GRAPH}: not an ONNX export of ragtune")
        self.session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        st = _read(self.path / "sentence_bert_config.json")
        self.max_seq_length = int(st.get("max_seq_length") or self.tokenizer.model_max_length)
        self.do_lower_case = bool(st.get("do_lower_case", False))
        self.prompts = _read(self.path / "config_sentence_transformers.json").get("prompts") or {}
        self.pooling = pooling_mode(_read(self.path / "1_Pooling" / "config.json"), self.path)
        self.device = _Device()

    def encode_query(self, texts, **kwargs):
        return self.encode(texts, prompt=self.prompts.get("query", ""), **kwargs)

    def encode_document(self, texts, **kwargs):
        prompt = self.prompts.get("document", self.prompts.get("passage", ""))
        return self.encode(texts, prompt=prompt, **kwargs)

    def encode(
        self,
        texts,
        prompt: str = "",
        batch_size: int = 32,
        convert_to_tensor: bool = False,
        normalize_embeddings: bool = True,
        show_progress_bar: bool = False,
        **_,
    ):
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        texts = [prompt + t for t in texts]
        if self.do_lower_case:
            texts = [t.lower() for t in texts]
        order = np.argsort([-len(t) for t in texts], kind="stable")  # like lengths in a batch: less padding
        out = np.zeros((len(texts), self.dimension), dtype=np.float32) if texts else np.zeros((0, 0), np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            out[rows] = self._embed([texts[r] for r in rows], normalize_embeddings)
        if convert_to_tensor:
            import torch

            out = torch.from_numpy(out)
        return out[0] if single else out

    @property
    def dimension(self) -> int:
        if not hasattr(self, "_dimension"):
            self._dimension = self._embed(["x"], False).shape[1]
        return self._dimension

    def _embed(self, texts: list[str], normalize: bool) -> np.ndarray:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="np")
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self.inputs}
        hidden = self.session.run(None, feed)[0]
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = enc["attention_mask"][..., None].astype(np.float32)
            emb = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if normalize:
            emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
        return emb.astype(np.float32)


def pooling_mode(config: dict, path: Path) -> str:
    """ "mean" or "cls" from the model's pooling config (sentence-transformers 6's `pooling_mode`, or
    the older `pooling_mode_*_tokens` flags); any other pooling is a clear error."""
    mode = config.get("pooling_mode")
    if mode is None:
        mode = "cls" if config.get("pooling_mode_cls_token") else "mean" if config.get("pooling_mode_mean_tokens", True) else "?"
    if mode not in ("mean", "cls") or config.get("include_prompt") is False:
        raise ValueError(
            f"{path / '1_Pooling/config.json'} pools by {mode!r} (include_prompt={config.get('include_prompt', True)}): "
            "ONNX exports support mean or CLS pooling over every token; use export=static or the torch model"
        )
    return mode


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}
