"""`export=static`: the trained model distilled into a static embedding model (model2vec, through
sentence-transformers' `StaticEmbedding.from_distillation`): one vector per vocabulary token, a
sentence is the mean of its tokens' vectors. No transformer runs at encode time, so it is hundreds
of times faster and much worse at word order; the export's row says how much worse on your data.

Saved as a sentence-transformers model, so `SentenceTransformer(dir)` and LlamaIndex's
`HuggingFaceEmbedding(model_name=dir)` load it as they load any other.
"""

from __future__ import annotations

import json
from pathlib import Path


def distill_static(model_dir: Path, out: Path, pca_dims: int | None, device: str) -> Path:
    """Encode every token of the model's vocabulary with the model, reduce to `pca_dims` (PCA; None
    keeps the model's width), save a sentence-transformers model with the source's prompts."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    config = model_dir / "config_sentence_transformers.json"
    prompts = (json.loads(config.read_text()).get("prompts") if config.exists() else None) or None
    width = json.loads((model_dir / "config.json").read_text()).get("hidden_size")
    dims = min(pca_dims, width) if pca_dims and width else pca_dims
    static = StaticEmbedding.from_distillation(str(model_dir), device=device, pca_dims=dims)
    SentenceTransformer(modules=[static], prompts=prompts, device="cpu").save(str(out))
    return out
