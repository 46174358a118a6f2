"""`evaluate.engine=llama_index`: the seed workflow's own evaluation path, for cross-checking.

A `VectorStoreIndex` over the eval corpus with the model as LlamaIndex's `HuggingFaceEmbedding` (with the
run's prompts and window: `"local:<dir>"` would drop the prompts), retrieval
with `as_retriever(similarity_top_k=k)`, each query retrieved through llama-index's `RetrieverEvaluator`:
hit rate, MRR, precision, recall and nDCG at k (so the default `optimized_metric`, `finetuned/ndcg@10`, works
with this engine too). Slow (one query at a time, as the guide does it) but an independent retrieval path:
where scores have no ties, it ranks as the fast path does (a test checks it). The metrics are computed from
its ranked ids with the same definitions as every other row the verdict compares (`runner.infra.metrics`:
graded nDCG normalised by at most k relevant documents), not with the evaluator's own, whose nDCG is
binary and normalised by all of a query's relevant documents: two definitions in one verdict would compare
a row with another on different yardsticks.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

from runner.infra.metrics import per_query_metrics
from runner.infra.models import hf_embedding
from runner.stages.evaluate.scoring import EvalResult, EvalSet

METRICS = ("hit_rate", "mrr", "precision", "recall", "ndcg")  # llama-index's names, reported as <name>@k


def evaluate_with_llama_index(
    model_dir: str,
    eval_set: EvalSet,
    k: int,
    *,
    max_length: int | None = None,
    query_prompt: str = "",
    passage_prompt: str = "",
    device: str = "cpu",
    adapter=None,
) -> EvalResult:
    """`adapter`: (adapter dir, adapter class) to evaluate `AdapterEmbeddingModel` over the model."""
    from llama_index.core import VectorStoreIndex
    from llama_index.core.evaluation import RetrieverEvaluator
    from llama_index.core.schema import TextNode

    embed = hf_embedding(
        str(model_dir), max_length=max_length, query_prompt=query_prompt, passage_prompt=passage_prompt, device=device
    )
    if adapter is not None:
        from llama_index.embeddings.adapter import AdapterEmbeddingModel

        embed = AdapterEmbeddingModel(embed, str(adapter[0]), adapter_cls=adapter[1])
    nodes = [TextNode(id_=d, text=eval_set.corpus[d]) for d in sorted(eval_set.corpus)]
    index = VectorStoreIndex(nodes, embed_model=embed, show_progress=len(nodes) > 500)
    retriever = index.as_retriever(similarity_top_k=k)
    evaluator = RetrieverEvaluator.from_metric_names(list(METRICS), retriever=retriever)
    query_ids = eval_set.answered_query_ids()
    ranked = []
    for qid in tqdm(query_ids, desc="llama-index retrieval", disable=len(query_ids) < 50):
        r = evaluator.evaluate(query=eval_set.queries[qid], expected_ids=eval_set.relevant_docs[qid])
        ranked.append(list(r.retrieved_ids))
    relevant = [set(eval_set.relevant_docs[q]) for q in query_ids]
    grades = [eval_set.grades[q] for q in query_ids] if eval_set.grades else None
    ks = {"hit_rate_at_k": (k,), "precision_recall_at_k": (k,), "mrr_at_k": (k,), "ndcg_at_k": (k,), "map_at_k": ()}
    per_query = per_query_metrics(ranked, relevant, grades=grades, **ks)
    first = [next((i + 1 for i, d in enumerate(hits) if d in rel), None) for hits, rel in zip(ranked, relevant)]
    return EvalResult({n: float(np.mean(v)) for n, v in per_query.items()}, per_query, query_ids, first)
