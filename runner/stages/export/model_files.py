"""What a sentence-transformers model directory's own files say about how it reads a text: its window
(`sentence_bert_config.json`) and its pooling (`1_Pooling/config.json`). Read by the graph encoder that
serves an export and by the exporters that build one."""

from __future__ import annotations

import json
from pathlib import Path


def pooling_mode(config: dict, path: Path) -> str:
    """ "mean" or "cls" from the model's pooling config (sentence-transformers 6's `pooling_mode`, or
    the older `pooling_mode_*_tokens` flags); any other pooling is a clear error."""
    mode = config.get("pooling_mode")
    if mode is None:
        mode = "cls" if config.get("pooling_mode_cls_token") else "mean" if config.get("pooling_mode_mean_tokens", True) else "?"
    if mode not in ("mean", "cls") or config.get("include_prompt") is False:
        raise ValueError(
            f"{path / '1_Pooling/config.json'} pools by {mode!r} (include_prompt={config.get('include_prompt', True)}): "
            "graph exports support mean or CLS pooling over every token; use export=static or the torch model"
        )
    return mode


def max_seq_length(path: Path, tokenizer) -> int:
    """The tokens the model reads a text to: its sentence-transformers window, else the tokenizer's."""
    return int(read_config(Path(path) / "sentence_bert_config.json").get("max_seq_length") or tokenizer.model_max_length)


def read_config(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}
