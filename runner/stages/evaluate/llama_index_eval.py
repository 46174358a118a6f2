"""`evaluate.engine=llama_index`: the seed workflow's own evaluation path, for cross-checking.

A `VectorStoreIndex` over the eval corpus with the model as LlamaIndex's `HuggingFaceEmbedding` (with the
run's prompts and window: `"local:<dir>"` would drop the prompts), retrieval
with `as_retriever(similarity_top_k=k)`, scoring with llama-index's `RetrieverEvaluator`: hit rate,
MRR, precision, recall and nDCG at k (so the default `optimized_metric`, `finetuned/ndcg@10`, works
with this engine too). Slow (one query at a time, as the guide does it) but independent of the fast
path: where scores have no ties, both give the same numbers (a test checks it). One difference of
definition: llama-index's nDCG normalises by all of a query's relevant documents, the fast path
(like sentence-transformers) by at most k of them; they agree whenever a query has k or fewer.
"""

from __future__ import annotations

import numpy as np
from tqdm import tqdm

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
    values: dict[str, list[float]] = {name: [] for name in METRICS}
    first = []
    for qid in tqdm(query_ids, desc="llama-index retrieval", disable=len(query_ids) < 50):
        expected = eval_set.relevant_docs[qid]
        r = evaluator.evaluate(query=eval_set.queries[qid], expected_ids=expected)
        for name in METRICS:
            values[name].append(r.metric_vals_dict[name])
        first.append(next((i + 1 for i, d in enumerate(r.retrieved_ids) if d in expected), None))
    per_query = {f"{name}@{k}": np.asarray(v, float) for name, v in values.items()}
    return EvalResult({n: float(v.mean()) for n, v in per_query.items()}, per_query, query_ids, first)
