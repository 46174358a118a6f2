"""`GraphEncoder`: an exported graph (ONNX or OpenVINO IR) with the model's tokenizer, prompts and
pooling around it, encoding as a sentence-transformers model does (`encode_query`, `encode_document`).

Every graph export is the transformer alone, from the token ids to the last hidden state, in
sentence-transformers' layout (`onnx/model.onnx`, `onnx/model_qint8.onnx`, `openvino/openvino_model.xml`,
`openvino/openvino_model_qint8_quantized.xml`) next to the model's configs, tokenizer and
`1_Pooling/`; the pooling the model's own `1_Pooling/config.json` names (mean or CLS) runs here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runner.stages.export.model_files import max_seq_length, pooling_mode, read_config

# the graph files an export may hold, the int8 ones first: a directory holds one of them
GRAPHS = (
    "onnx/model_qint8.onnx",
    "onnx/model.onnx",
    "openvino/openvino_model_qint8_quantized.xml",
    "openvino/openvino_model.xml",
)


def graph_of(path: Path) -> Path | None:
    """The graph an export directory holds, or None (a torch or static model)."""
    return next((Path(path) / g for g in GRAPHS if (Path(path) / g).exists()), None)


class _Device:
    type = "cpu"


class GraphEncoder:
    """A sentence-transformers-like encoder over an exported directory: `encode_query`,
    `encode_document` (with the model's prompts), `max_seq_length`, `device.type`."""

    def __init__(self, path: str | Path):
        from transformers import AutoTokenizer

        self.path = Path(path)
        graph = graph_of(self.path)
        if graph is None:
            raise FileNotFoundError(f"{self.path} holds none of {', '.join(GRAPHS)}: not a graph export of ragtune")
        self.run = runtime(graph)
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path))
        self.max_seq_length = max_seq_length(self.path, self.tokenizer)
        self.do_lower_case = bool(read_config(self.path / "sentence_bert_config.json").get("do_lower_case", False))
        self.prompts = read_config(self.path / "config_sentence_transformers.json").get("prompts") or {}
        self.pooling = pooling_mode(read_config(self.path / "1_Pooling" / "config.json"), self.path)
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

    def tokenize(self, texts: list[str]) -> dict:
        """The graph's inputs for `texts` (int64 ids, mask and token types where the graph takes them)."""
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="np")
        return {k: v.astype(np.int64) for k, v in enc.items() if k in self.run.inputs}

    def _embed(self, texts: list[str], normalize: bool) -> np.ndarray:
        feed = self.tokenize(texts)
        hidden = self.run(feed)
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = feed["attention_mask"][..., None].astype(np.float32)
            emb = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
        if normalize:
            emb = emb / np.clip(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12, None)
        return emb.astype(np.float32)


def runtime(graph: Path):
    """The runtime of a graph file: ONNX Runtime for `.onnx`, OpenVINO for `.xml`."""
    if graph.suffix == ".onnx":
        from runner.stages.export.onnx import OnnxRuntime

        return OnnxRuntime(graph)
    from runner.stages.export.openvino import OpenVinoRuntime

    return OpenVinoRuntime(graph)
