"""What every finetune method returns: where the model is, something that encodes like it, and how a
LlamaIndex app loads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Finetuned:
    model_dir: Path  # what the run ships (model/, or adapter/ for finetune=adapter)
    encoder: object  # encodes as the shipped model does: a SentenceTransformer, or the base model + an adapter
    llama_index: str  # the line that loads it in LlamaIndex
    adapter_class: str | None = None  # finetune=adapter: model_dir is an adapter of this class over the base model

    @classmethod
    def sentence_transformer(cls, model_dir: Path, model) -> Finetuned:
        """A full model directory: SentenceTransformer(path) loads it, and ragtune.load_embedding(path) in
        LlamaIndex with its prompts and window (LlamaIndex's "local:<path>" drops the prompts)."""
        return cls(Path(model_dir), model, f'Settings.embed_model = ragtune.load_embedding("{model_dir}")')
