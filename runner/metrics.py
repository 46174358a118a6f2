"""Retrieval metrics from ranked lists, with sentence-transformers' definitions.

Names follow DESIGN.md (`hit_rate@k` is sentence-transformers' `accuracy@k`); values equal
`InformationRetrievalEvaluator`'s on the same rankings: binary relevance, nDCG's ideal DCG over
min(#relevant, k) ones, MAP@k divided by min(k, #relevant).
"""

from __future__ import annotations

import numpy as np


def per_query_metrics(
    ranked: list[list[str]],
    relevant: list[set[str]],
    *,
    hit_rate_at_k=(1, 5, 10),
    precision_recall_at_k=(10,),
    mrr_at_k=(10,),
    ndcg_at_k=(10,),
    map_at_k=(100,),
) -> dict[str, np.ndarray]:
    """One value per query for each metric; `ranked[i]` is query i's corpus ids, best first."""
    out: dict[str, list[float]] = {}

    def put(name: str, value: float) -> None:
        out.setdefault(name, []).append(float(value))

    for hits, rel in zip(ranked, relevant):
        is_rel = [h in rel for h in hits]
        for k in hit_rate_at_k:
            put(f"hit_rate@{k}", any(is_rel[:k]))
        for k in precision_recall_at_k:
            put(f"precision@{k}", sum(is_rel[:k]) / k)
            put(f"recall@{k}", sum(is_rel[:k]) / len(rel))
        for k in mrr_at_k:
            first = next((r for r, ok in enumerate(is_rel[:k]) if ok), None)
            put(f"mrr@{k}", 0.0 if first is None else 1.0 / (first + 1))
        for k in ndcg_at_k:
            dcg = sum(1.0 / np.log2(r + 2) for r, ok in enumerate(is_rel[:k]) if ok)
            idcg = sum(1.0 / np.log2(r + 2) for r in range(min(len(rel), k)))
            put(f"ndcg@{k}", dcg / idcg)
        for k in map_at_k:
            found, total = 0, 0.0
            for r, ok in enumerate(is_rel[:k]):
                if ok:
                    found += 1
                    total += found / (r + 1)
            put(f"map@{k}", total / min(k, len(rel)))
    return {name: np.asarray(values) for name, values in out.items()}


def mean_metrics(per_query: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: float(np.mean(values)) for name, values in per_query.items()}


def paired_bootstrap_ci(
    base: np.ndarray, tuned: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95% percentile interval of mean(tuned - base) over queries resampled with replacement."""
    diff = np.asarray(tuned) - np.asarray(base)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(n_resamples, len(diff)))
    means = diff[idx].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def paired_randomization_p(
    base: np.ndarray, tuned: np.ndarray, n_resamples: int = 1000, seed: int = 0
) -> float:
    """Two-sided p-value of mean(tuned - base) under random sign flips of the per-query differences."""
    diff = np.asarray(tuned) - np.asarray(base)
    observed = abs(diff.mean())
    if not np.any(diff):
        return 1.0
    rng = np.random.default_rng(seed)
    signs = rng.choice([-1.0, 1.0], size=(n_resamples, len(diff)))
    null = np.abs((signs * diff).mean(axis=1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (n_resamples + 1))
