"""Stage `evaluate`: an eval set and a model in, metrics and per-query ranks out.

Batched encoding (sentence-transformers sorts each batch list by length), then exact top-k by
chunked matrix products on the model's device: no query x corpus matrix beyond one chunk.
Ties are broken by ascending corpus id, as sentence-transformers' InformationRetrievalEvaluator does.
Corpus embeddings live in a `CorpusIndex` that knows which model made them and refuses queries
embedded by any other model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner.data.eval_set import EvalSet
from runner.infra.errors import RagtuneError
from runner.infra.metrics import mean_metrics, per_query_metrics
from runner.infra.models import autocast
from runner.stages.evaluate.baselines import dense_ranking
from runner.stages.evaluate.choices import per_query
from runner.stages.evaluate.schema import K_KEYS


@dataclass
class EvalResult:
    metrics: dict[str, float]
    per_query: dict[str, np.ndarray]  # metric -> one value per query, in `query_ids` order
    query_ids: list[str]
    first_relevant_rank: list[int | None]  # 1-based rank of the first relevant doc within top-k
    dense: object = None  # (CorpusIndex, query embeddings) of the fast path, for hybrids; never stored


@dataclass
class CorpusIndex:
    """Corpus embeddings (rows in `doc_ids` order) and the identity of the model that made them."""

    model_id: str
    doc_ids: list[str]
    embeddings: object  # torch.Tensor, normalised

    def search(self, query_emb, model_id: str, k: int):
        if model_id != self.model_id:
            raise RagtuneError(
                f"these corpus embeddings were made by model {self.model_id}, but the queries by "
                f"{model_id}; scores across two models mean nothing. Rebuild the index (or delete the "
                "embedding cache entry) with the model you query with."
            )
        return top_k(query_emb, self.embeddings.to(query_emb.device), k)


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


def encode(model, texts: list[str], kind: str, batch_size: int, precision: str = "fp32"):
    """Normalised float32 embeddings; `kind` is "query" or "document" (the model's prompts apply)."""
    fn = model.encode_query if kind == "query" else model.encode_document
    with autocast(precision, model.device.type):
        emb = fn(
            texts,
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=len(texts) > 10 * batch_size,
        )
    return emb.float()


def build_index(model, model_id: str, corpus: dict[str, str], batch_size: int, precision: str = "fp32") -> CorpusIndex:
    doc_ids = sorted(corpus)  # row order = id order, so ties resolve by id
    emb = encode(model, [corpus[d] for d in doc_ids], "document", batch_size, precision)
    return CorpusIndex(model_id, doc_ids, emb)


def evaluate_model(
    model,
    eval_set: EvalSet,
    evaluate_cfg,
    batch_size: int = 64,
    *,
    model_id: str = "model",
    index: CorpusIndex | None = None,
    precision: str = "fp32",
) -> EvalResult:
    """Rank the corpus for each query with `model`, score the rankings.

    `index`: corpus embeddings made earlier (e.g. from the embedding cache); they must come from
    the same model (`model_id`), else the search refuses.
    """
    max_k = max(max(evaluate_cfg[name]) for name in K_KEYS)
    if index is None:
        index = build_index(model, model_id, eval_set.corpus, batch_size, precision)
    query_ids = eval_set.answered_query_ids()
    query_emb = encode(model, [eval_set.queries[q] for q in query_ids], "query", batch_size, precision)
    ranked_rows = index.search(query_emb, model_id, max_k).tolist()
    ranked = [[index.doc_ids[r] for r in rows] for rows in ranked_rows]
    result = score_ranked(ranked, eval_set, evaluate_cfg)
    result.dense = (index, query_emb)
    return result


def score_ranked(ranked: list[list[str]], eval_set: EvalSet, evaluate_cfg) -> EvalResult:
    """The metrics of any retriever from each answered query's ranked doc ids (in answered-query order)."""
    ks = {name: list(evaluate_cfg[name]) for name in K_KEYS}
    query_ids = eval_set.answered_query_ids()
    relevant = [set(eval_set.relevant_docs[q]) for q in query_ids]
    grades = [eval_set.grades[q] for q in query_ids] if eval_set.grades else None
    per_query = per_query_metrics(ranked, relevant, grades=grades, **ks)
    first = [next((r + 1 for r, d in enumerate(hits) if d in rel), None) for hits, rel in zip(ranked, relevant)]
    return EvalResult(mean_metrics(per_query), per_query, query_ids, first)


def dense_top(
    model,
    model_id: str,
    eval_set: EvalSet,
    k: int,
    batch_size: int = 64,
    precision: str = "fp32",
    index: CorpusIndex | None = None,
    query_emb=None,
):
    """Each answered query's top k by the model (a `baselines.Ranking`, the dense side of a hybrid)."""
    if index is None:
        index = build_index(model, model_id, eval_set.corpus, batch_size, precision)
    if query_emb is None:
        query_emb = encode(model, [eval_set.queries[q] for q in eval_set.answered_query_ids()], "query", batch_size, precision)
    return dense_ranking(query_emb, index, k)


def encode_set(model, model_id: str, eval_set: EvalSet, batch_size: int = 64, precision: str = "fp32"):
    """(the corpus's CorpusIndex, the answered queries' embeddings): one encoding of a set, from which a
    ranking of it or of any part of it is made (`ranking_of`, `part_of`)."""
    index = build_index(model, model_id, eval_set.corpus, batch_size, precision)
    qids = eval_set.answered_query_ids()
    return index, encode(model, [eval_set.queries[q] for q in qids], "query", batch_size, precision)


def ranking_of(encoded, k: int):
    """Each query's top k (a `baselines.Ranking`) from an `encode_set` result."""
    index, query_emb = encoded
    return dense_ranking(query_emb, index, k)


def part_of(encoded, whole: EvalSet, part: EvalSet):
    """The encoding of `part`, a subset of `whole` id for id (the dev split within the training side),
    cut out of `whole`'s: no text is encoded again."""
    import torch

    index, query_emb = encoded
    rows = [i for i, d in enumerate(index.doc_ids) if d in part.corpus]
    position = {q: i for i, q in enumerate(whole.answered_query_ids())}
    queries = [position[q] for q in part.answered_query_ids()]
    sub = CorpusIndex(index.model_id, [index.doc_ids[i] for i in rows], index.embeddings[torch.tensor(rows, dtype=torch.long)])
    return sub, query_emb[torch.tensor(queries, dtype=torch.long)]


def dev_scores(model, model_id: str, dev: EvalSet, metric: str, k: int, batch_size: int = 64, precision: str = "fp32"):
    """(the model's top-k ranking of `dev`, one value of `metric` per answered query): what every
    choice on the dev split compares."""
    ranking = dense_top(model, model_id, dev, k, batch_size, precision)
    return ranking, ranking_scores(ranking, dev, metric)


def ranking_scores(ranking, dev: EvalSet, metric: str):
    """One value of `metric` per answered query of `dev`, from a ranking made already."""
    return per_query(ranking.ranked_ids(), dev, dev.answered_query_ids(), metric)


def index_to_json(index: CorpusIndex) -> dict:
    return {"model_id": index.model_id, "doc_ids": index.doc_ids, "arrays": {"embeddings": index.embeddings.cpu().numpy()}}


def index_from_json(data: dict) -> CorpusIndex:
    import torch

    return CorpusIndex(data["model_id"], data["doc_ids"], torch.from_numpy(data["arrays"]["embeddings"]))


def result_to_json(result: EvalResult) -> dict:
    return {
        **{k: v for k, v in result.__dict__.items() if k != "dense"},
        "per_query": {k: v.tolist() for k, v in result.per_query.items()},
    }


def result_from_json(data: dict) -> EvalResult:
    return EvalResult(**{**data, "per_query": {k: np.asarray(v) for k, v in data["per_query"].items()}})


def with_embeddings(reference: EvalResult, model_dir: Path, eval_set: EvalSet, evaluate_cfg) -> EvalResult:
    """The trained model's eval result with its eval-set embeddings (`dense`): when it was read from the
    cache without them, the model at `model_dir` is scored once more and they are kept on `reference`, so
    the exports and the Matryoshka table encode the eval set once between them."""
    if reference.dense is None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(model_dir), device="cpu")
        reference.dense = evaluate_model(model, eval_set, evaluate_cfg, evaluate_cfg.batch_size).dense
    return reference
