"""Stage `evaluate`: an eval set and a model in, metrics and per-query ranks out.

Batched encoding (sentence-transformers sorts each batch list by length), then exact top-k by
chunked matrix products on the model's device: no query x corpus matrix beyond one chunk.
Ties are broken by ascending corpus id, as sentence-transformers' InformationRetrievalEvaluator does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runner.metrics import mean_metrics, per_query_metrics


@dataclass
class EvalSet:
    queries: dict[str, str]  # query id -> text
    corpus: dict[str, str]  # doc id -> text
    relevant_docs: dict[str, list[str]]  # query id -> relevant doc ids

    def answered_query_ids(self) -> list[str]:
        return [q for q in self.queries if self.relevant_docs.get(q)]


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]  # metric -> one value per query, in `query_ids` order
    query_ids: list[str]
    first_relevant_rank: list[int | None]  # 1-based rank of the first relevant doc within top-k


def top_k(query_emb, corpus_emb, k: int, query_chunk: int = 1024):
    """Indices of the k best corpus rows per query, ordered by (-score, corpus row)."""
    import torch

    k = min(k, corpus_emb.shape[0])
    ranked = []
    for start in range(0, query_emb.shape[0], query_chunk):
        scores = query_emb[start : start + query_chunk] @ corpus_emb.T
        values, idx = torch.topk(scores, k, dim=1, sorted=False)
        # Equal scores at the k-th place: topk picks arbitrarily; take the lowest rows instead.
        ties = (scores >= values.min(dim=1, keepdim=True).values).sum(dim=1) > k
        for row in torch.nonzero(ties).flatten().tolist():
            order = torch.sort(-scores[row], stable=True).indices[:k]
            idx[row], values[row] = order, scores[row][order]
        idx, order = torch.sort(idx, dim=1)  # rows ascending, then a stable sort by score
        values = values.gather(1, order)
        order = torch.sort(-values, dim=1, stable=True).indices
        ranked.append(idx.gather(1, order).cpu())
    return torch.cat(ranked) if ranked else torch.empty((0, k), dtype=torch.long)


def evaluate_model(model, eval_set: EvalSet, evaluate_cfg, batch_size: int = 64) -> EvalResult:
    """Encode corpus and queries with `model`, rank the corpus for each query, score the rankings."""
    ks = {
        name: list(evaluate_cfg[name])
        for name in ("hit_rate_at_k", "precision_recall_at_k", "mrr_at_k", "ndcg_at_k", "map_at_k")
    }
    max_k = max(max(v) for v in ks.values())
    doc_ids = sorted(eval_set.corpus)  # row order = id order, so ties resolve by id
    query_ids = eval_set.answered_query_ids()
    corpus_emb = model.encode_document(
        [eval_set.corpus[d] for d in doc_ids], batch_size=batch_size, convert_to_tensor=True,
        normalize_embeddings=True, show_progress_bar=True,
    )
    query_emb = model.encode_query(
        [eval_set.queries[q] for q in query_ids], batch_size=batch_size, convert_to_tensor=True,
        normalize_embeddings=True, show_progress_bar=True,
    )
    ranked_rows = top_k(query_emb.float(), corpus_emb.float(), max_k).tolist()
    ranked = [[doc_ids[r] for r in rows] for rows in ranked_rows]
    relevant = [set(eval_set.relevant_docs[q]) for q in query_ids]
    per_query = per_query_metrics(ranked, relevant, **ks)
    first = [next((r + 1 for r, d in enumerate(hits) if d in rel), None) for hits, rel in zip(ranked, relevant)]
    return EvalResult(mean_metrics(per_query), per_query, query_ids, first)
