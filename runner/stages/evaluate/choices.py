"""Choices made on the dev split, never on the eval set: BM25's tokenisation, each hybrid's fusion
mode, k and weight, and the merge weight. Each returns the winner and a record for results.json
(`choices`): every candidate with its dev score, the winner, and the seconds it took.

A tie keeps the earlier candidate: candidates are listed with LlamaIndex's own defaults first, so a
setting moves away from the default only on evidence.
"""

from __future__ import annotations

import re
import time

import numpy as np

from runner.stages.evaluate.baselines import Bm25, Ranking, fuse
from runner.data.eval_set import EvalSet
from runner.infra.metrics import per_query_metrics

_FAMILY = {
    "hit_rate": "hit_rate_at_k",
    "precision": "precision_recall_at_k",
    "recall": "precision_recall_at_k",
    "mrr": "mrr_at_k",
    "ndcg": "ndcg_at_k",
    "map": "map_at_k",
}


def metric_k(metric: str) -> tuple[str, int]:
    """`ndcg@10` (or `finetuned/ndcg@10`) -> ("ndcg", 10)."""
    name, k = re.fullmatch(r"(?:\w+/)?(\w+)@(\d+)", metric).groups()
    return name, int(k)


def per_query(ranked_ids: list[list[str]], eval_set: EvalSet, query_ids: list[str], metric: str) -> np.ndarray:
    """One value of `metric` per query, in `query_ids` order, from each query's ranked doc ids."""
    name, k = metric_k(metric)
    ks = {family: () for family in set(_FAMILY.values())}
    ks[_FAMILY[name]] = (k,)
    relevant = [set(eval_set.relevant_docs[q]) for q in query_ids]
    grades = [eval_set.grades[q] for q in query_ids] if eval_set.grades else None
    return per_query_metrics(ranked_ids, relevant, grades=grades, **ks)[f"{name}@{k}"]


def _pick(candidates: list[tuple[object, float]]) -> tuple[object, float]:
    best = candidates[0]
    for cand in candidates[1:]:
        if cand[1] > best[1] + 1e-12:
            best = cand
    return best


def choose_bm25(dev: EvalSet, grid, metric: str) -> tuple[object, dict]:
    """The BM25 settings (stopwords, stemming) that score best on the dev queries."""
    start = time.perf_counter()
    qids = dev.answered_query_ids()
    _, k = metric_k(metric)
    scored = []
    for settings in grid:
        ranking = Bm25(dev.corpus, settings).search([dev.queries[q] for q in qids], k)
        scored.append((settings, float(per_query(ranking.ranked_ids(), dev, qids, metric).mean())))
    chosen, score = _pick(scored)
    return chosen, {
        "metric": metric,
        "candidates": [{**s.as_dict(), "dev": round(v, 5)} for s, v in scored],
        "chosen": chosen.as_dict(),
        "dev": round(score, 5),
        "seconds": round(time.perf_counter() - start, 3),
    }


def choose_fusion(dense: Ranking, lexical: Ranking, dev: EvalSet, grid, metric: str) -> tuple[object, dict]:
    """The fusion (mode, k, dense weight) of one dense model with BM25 that scores best on dev.
    `dense` and `lexical`: the dev queries' top max(k) from each side, in answered-query order."""
    start = time.perf_counter()
    qids = dev.answered_query_ids()
    scored = [(f, float(per_query(fuse(dense, lexical, f).ranked_ids(), dev, qids, metric).mean())) for f in grid]
    chosen, score = _pick(scored)
    return chosen, {
        "metric": metric,
        "candidates": [{**f.as_dict(), "dev": round(v, 5)} for f, v in scored],
        "chosen": chosen.as_dict(),
        "dev": round(score, 5),
        "seconds": round(time.perf_counter() - start, 3),
    }
