"""Retrieval metrics from ranked lists, with sentence-transformers' definitions.

Names follow DESIGN.md (`hit_rate@k` is sentence-transformers' `accuracy@k`); values equal
`InformationRetrievalEvaluator`'s on the same rankings: binary relevance, nDCG's ideal DCG over
min(#relevant, k) ones, MAP@k divided by min(k, #relevant). With graded judgements (BEIR qrels),
nDCG uses the grades as linear gains, as BEIR's pytrec_eval does; every other metric counts a
document as relevant when its grade is above 0. With all grades 1 the two coincide.
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
    grades: list[dict[str, float]] | None = None,
) -> dict[str, np.ndarray]:
    """One value per query for each metric; `ranked[i]` is query i's corpus ids, best first.

    `relevant[i]` holds query i's relevant ids (grade > 0); `grades[i]`, if given, their grades.
    """
    out: dict[str, list[float]] = {}

    def put(name: str, value: float) -> None:
        out.setdefault(name, []).append(float(value))

    for i, (hits, rel) in enumerate(zip(ranked, relevant)):
        is_rel = [h in rel for h in hits]
        gain = grades[i] if grades else dict.fromkeys(rel, 1.0)
        ideal = sorted(gain.values(), reverse=True)
        for k in hit_rate_at_k:
            put(f"hit_rate@{k}", any(is_rel[:k]))
        for k in precision_recall_at_k:
            put(f"precision@{k}", sum(is_rel[:k]) / k)
            put(f"recall@{k}", sum(is_rel[:k]) / len(rel))
        for k in mrr_at_k:
            first = next((r for r, ok in enumerate(is_rel[:k]) if ok), None)
            put(f"mrr@{k}", 0.0 if first is None else 1.0 / (first + 1))
        for k in ndcg_at_k:
            dcg = sum(gain.get(h, 0.0) / np.log2(r + 2) for r, h in enumerate(hits[:k]))
            idcg = sum(g / np.log2(r + 2) for r, g in enumerate(ideal[:k]))
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
