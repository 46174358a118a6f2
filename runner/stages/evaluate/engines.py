"""One model on the eval set by the engine `evaluate.engine` names: the fast path (`scoring`) or
LlamaIndex's own retriever (`llama_index_eval`)."""

from __future__ import annotations

from runner.stages.evaluate.llama_index_eval import evaluate_with_llama_index
from runner.stages.evaluate.scoring import CorpusIndex, EvalResult, EvalSet, evaluate_model


def evaluate_with_engine(
    model,
    eval_set: EvalSet,
    evaluate_cfg,
    index: CorpusIndex | None = None,
    *,
    model_path: str,
    model_id: str,
    precision: str,
    device: str,
    base_model_cfg,
) -> EvalResult:
    """One model on the eval set, by the engine `evaluate.engine` names: `fast` (batched encode, exact
    top-k; `index`: the corpus embeddings when made already) or `llama_index` (the seed guide's path)."""
    if evaluate_cfg.engine == "llama_index":
        adapter = getattr(model, "adapter", None)  # finetune=adapter: the base model + the adapter dir
        return evaluate_with_llama_index(
            str(base_model_cfg.name_or_path) if adapter is not None else model_path,
            eval_set,
            evaluate_cfg.llama_index_top_k,
            max_length=model.max_seq_length,
            query_prompt=base_model_cfg.query_prompt,
            passage_prompt=base_model_cfg.passage_prompt,
            device=device,
            adapter=(model_path, type(adapter)) if adapter is not None else None,
        )
    return evaluate_model(
        model, eval_set, evaluate_cfg, evaluate_cfg.batch_size, model_id=model_id, index=index, precision=precision
    )
