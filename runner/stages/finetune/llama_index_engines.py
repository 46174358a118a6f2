"""Finetune methods from llama-index-finetuning: the seed workflow's own engines.

- `train_llama_index_engine`: `SentenceTransformersFinetuneEngine` (MNRL over (question, chunk)
  pairs, `model.fit`). Its limits: no learning-rate or warmup knobs of its own, no no-duplicates
  sampler (two questions about one chunk can be each other's negatives), and it writes
  `./checkpoints` into the working directory, so it runs inside the job dir.
- `train_adapter`: `EmbeddingAdapterFinetuneEngine`: the base model frozen, a `linear` or
  `two_layer` adapter trained on query embeddings; loads in LlamaIndex as `AdapterEmbeddingModel`.
Both return (model dir, a model the evaluator can encode with).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from pathlib import Path

from runner.infra.errors import RagtuneError
from runner.infra.models import hf_embedding
from runner.stages.finetune.hf_trainer import run_training
from runner.stages.finetune.result import Finetuned

log = logging.getLogger("ragtune")


def _engines():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import llama_index.finetuning as lif
    return lif


def train_llama_index_engine(
    model,
    pairs,
    output_dir,
    *,
    epochs: int,
    batch_size: int,
    seed: int,
    base_model_path: str,
    device: str,
    on_log=None,
    **_ignored,
):
    from sentence_transformers import SentenceTransformer
    from transformers import set_seed

    set_seed(seed)  # the engine seeds nothing: shuffling and dropout follow torch's global state
    output_dir = Path(output_dir)
    model_dir = output_dir / "model"
    engine = _engines().SentenceTransformersFinetuneEngine(
        pairs,
        model_id=base_model_path,
        model_output_path=str(model_dir),
        batch_size=batch_size,
        epochs=int(epochs),
        evaluation_steps=0,
        device=device,
        show_progress_bar=True,
    )
    # the engine loads the base model afresh from its path: give it the run's window and prompts, so the model
    # it saves is scored and shipped as the base model was (the engine's fit still trains without prompts)
    engine.model.max_seq_length = model.max_seq_length
    engine.model.prompts = dict(model.prompts)
    with contextlib.chdir(output_dir):  # the engine writes ./checkpoints wherever it is run
        run_training(engine.finetune, batch_size=batch_size)
    leftovers = output_dir / "checkpoints"  # empty folders without save_checkpoints
    if leftovers.is_dir() and not any(p.is_file() for p in leftovers.rglob("*")):
        shutil.rmtree(leftovers)
    return Finetuned.sentence_transformer(model_dir, SentenceTransformer(str(model_dir), device=device))


class AdapterEncoder:
    """The frozen base model for passages, base + adapter for queries: what AdapterEmbeddingModel
    computes, batched for the fast evaluator."""

    def __init__(self, base, adapter):
        self.base, self.adapter = base, adapter.eval()
        self.device, self.max_seq_length, self.tokenizer = base.device, base.max_seq_length, base.tokenizer

    def encode_document(self, texts, **kwargs):
        return self.base.encode_document(texts, **kwargs)

    def encode_query(self, texts, normalize_embeddings: bool = True, **kwargs):
        import torch

        emb = self.base.encode_query(texts, normalize_embeddings=True, **{**kwargs, "convert_to_tensor": True})
        with torch.no_grad():
            out = self.adapter.to(emb.device)(emb.float())
        return torch.nn.functional.normalize(out, dim=-1) if normalize_embeddings else out


def train_adapter(
    model,
    pairs,
    output_dir,
    *,
    adapter: str,
    hidden_features: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
    base_model_path: str,
    device: str,
    base_model_revision: str | None = None,
    on_log=None,
    **_ignored,
):
    from llama_index.embeddings.adapter.utils import LinearLayer, TwoLayerNN
    from transformers import set_seed

    set_seed(seed)
    dim = model.get_embedding_dimension()
    if adapter == "linear":
        net = LinearLayer(dim, dim)
    elif adapter == "two_layer":
        net = TwoLayerNN(dim, hidden_features, dim, add_residual=True)
    else:
        raise RagtuneError(f"finetune.adapter={adapter} is unknown; use linear or two_layer.")
    adapter_dir = Path(output_dir) / "adapter"
    # the base model as the run scores it: its revision, window and prompts (HuggingFaceEmbedding's own default
    # passes empty prompts, so an e5 adapter would train on unprompted texts and be served prompted)
    embed = hf_embedding(
        base_model_path,
        revision=base_model_revision,
        max_length=model.max_seq_length,
        query_prompt=model.prompts.get("query", ""),
        passage_prompt=model.prompts.get("document", ""),
        device=device,
    )
    engine = _engines().EmbeddingAdapterFinetuneEngine(
        pairs,
        embed,
        batch_size=batch_size,
        epochs=int(epochs),
        adapter_model=net,
        model_output_path=str(adapter_dir),
        device=device,
        verbose=False,
        optimizer_params={"lr": learning_rate},
    )
    run_training(engine.finetune, batch_size=batch_size)
    # reload what was saved: the evaluator scores the adapter a LlamaIndex app would load
    loads = f'ragtune.load_retriever("{Path(output_dir)}", documents, row="finetuned")'  # base model + adapter
    return Finetuned(adapter_dir, AdapterEncoder(model, type(net).load(str(adapter_dir))), loads, type(net).__name__)
