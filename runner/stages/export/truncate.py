"""`export=truncate`: the trained model saved at a smaller width (`dim`), for a Matryoshka model the
width its `dimensions` table says is worth it. sentence-transformers keeps the width in the model's
`config_sentence_transformers.json` (`truncate_dim`), so `SentenceTransformer(dir)` and LlamaIndex's
`HuggingFaceEmbedding(model_name=dir)` give `dim`-wide embeddings with no argument: an index a
fraction of the size, encoding as fast as the full model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from runner.stages.export.onnx import SKIP

CONFIG = "config_sentence_transformers.json"


def save_truncated(model_dir: Path, out: Path, dim: int) -> Path:
    """Copy the model to `out` with `truncate_dim: dim` in its sentence-transformers config."""
    width = _width(model_dir)
    if width is not None and dim > width:
        raise ValueError(f"export.truncate.dim={dim} is wider than the model's {width} dimensions: use {width // 2} or less")
    shutil.copytree(model_dir, out, ignore=lambda _d, names: [n for n in names if n in SKIP | {"checkpoints"}])
    config = json.loads((out / CONFIG).read_text()) if (out / CONFIG).exists() else {}
    (out / CONFIG).write_text(json.dumps({**config, "truncate_dim": dim}, indent=2))
    return out


def _width(model_dir: Path) -> int | None:
    config = model_dir / "config.json"
    return json.loads(config.read_text()).get("hidden_size") if config.exists() else None
