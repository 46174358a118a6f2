"""Retrieval metrics from ranked lists, with sentence-transformers' definitions.

Names follow DESIGN.md (`hit_rate@k` is sentence-transformers' `accuracy@k`); values equal
`InformationRetrievalEvaluator`'s on the same rankings: binary relevance, nDCG's ideal DCG over
min(#relevant, k) ones, MAP@k divided by min(k, #relevant). With graded judgements (BEIR qrels),
nDCG uses the grades as linear gains, as BEIR's pytrec_eval does; every other metric counts a
document as relevant when its grade is above 0. With all grades 1 the two coincide.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

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


def paired_bootstrap_ci(base: np.ndarray, tuned: np.ndarray, n_resamples: int = 10_000, seed: int = 0) -> tuple[float, float]:
    """95% BCa interval (bias-corrected and accelerated; `scipy.stats.bootstrap`) of mean(tuned - base)
    over queries resampled with replacement, seeded.

    Per-query deltas are skewed and mostly zero (finetuning moves a minority of queries), where the
    plain percentile interval is off-centre; BCa corrects for both. 10,000 resamples keep the
    interval's ends steady from seed to seed (docs/evaluation.md, "How sure is a delta?")."""
    from scipy import stats

    diff = np.asarray(tuned, float) - np.asarray(base, float)
    if len(diff) == 0:
        return float("nan"), float("nan")
    if np.all(diff == diff[0]):  # no spread: every resample has the same mean
        return float(diff[0]), float(diff[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a degenerate jackknife: handled below
        ci = stats.bootstrap(
            (diff,), np.mean, n_resamples=n_resamples, method="BCa", vectorized=True, batch=1000, rng=np.random.default_rng(seed)
        ).confidence_interval
        if not (np.isfinite(ci.low) and np.isfinite(ci.high)):
            ci = stats.bootstrap(
                (diff,),
                np.mean,
                n_resamples=n_resamples,
                method="percentile",
                vectorized=True,
                batch=1000,
                rng=np.random.default_rng(seed),
            ).confidence_interval
    return float(ci.low), float(ci.high)


def paired_randomization_p(base: np.ndarray, tuned: np.ndarray, n_resamples: int = 10_000, seed: int = 0) -> float:
    """Two-sided p-value of mean(tuned - base) under random sign flips of the per-query differences
    (drawn in batches of 1,000, so memory stays flat however many resamples)."""
    diff = np.asarray(tuned, float) - np.asarray(base, float)
    observed = abs(diff.mean()) if len(diff) else 0.0
    if not np.any(diff):
        return 1.0
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, n_resamples, 1000):
        signs = rng.choice([-1.0, 1.0], size=(min(1000, n_resamples - start), len(diff)))
        extreme += int(np.sum(np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12))
    return float((1 + extreme) / (n_resamples + 1))


@dataclass(frozen=True)
class Paired:
    """A paired comparison of two retrievers over the same questions: (b - a)'s mean, its 95% BCa interval
    and the randomization p (None where not asked for). Every comparison a run reports is one of these;
    each output names its fields as its contract says (`delta` / `delta_vs_torch` / `delta_vs_full` ...)."""

    delta: float
    ci95: tuple[float, float]
    p: float | None = None

    @classmethod
    def of(cls, a, b, n_resamples: int = 10_000, seed: int = 0, *, p: bool = True) -> Paired:
        """(b - a) over the questions: `a` and `b` hold one score per question, in the same order."""
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        low, high = paired_bootstrap_ci(a, b, n_resamples, seed)
        return cls(float(np.mean(b) - np.mean(a)), (low, high), paired_randomization_p(a, b, n_resamples, seed) if p else None)

    def flipped(self) -> Paired:
        """(a - b): the BCa interval mirrors with the sign; p is the same test."""
        return Paired(-self.delta, (-self.ci95[1], -self.ci95[0]), self.p)

    @property
    def clear(self) -> bool:
        """b is clearly better: the interval lies above 0."""
        return self.ci95[0] > 0

    def as_dict(self, delta: str = "delta", ci95: str = "ci95", p: str = "p") -> dict:
        """The record under the field names an output uses; p left out when not computed."""
        out = {delta: self.delta, ci95: list(self.ci95)}
        return {**out, p: self.p} if self.p is not None else out
