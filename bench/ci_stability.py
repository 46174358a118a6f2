"""How much a delta's 95% interval moves with the bootstrap's seed, and what it costs. By hand:

    python bench/ci_stability.py outputs/runs/<date>/<run>      # a finished run with per_query.csv

From the run's per_query.csv (the rank of each query's relevant chunk, before and after finetuning)
it rebuilds per-query nDCG@10 (one relevant document per query, as held-out questions have; checked
against results.json), then for each method (percentile, BCa) and resample count (1,000, 10,000)
computes the interval with 20 seeds and prints the mean ends, how far they wander (max - min over
seeds), and the seconds one interval and one randomization p-value take for 8 metrics.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from runner.infra.metrics import paired_bootstrap_ci, paired_randomization_p


def ndcg_at_10(rank: str) -> float:
    return 1.0 / np.log2(int(rank) + 1) if rank and int(rank) <= 10 else 0.0


def interval(diff: np.ndarray, method: str, n: int, seed: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ci = stats.bootstrap(
            (diff,), np.mean, n_resamples=n, method=method, vectorized=True, batch=1000, rng=np.random.default_rng(seed)
        ).confidence_interval
    return ci.low, ci.high


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--seeds", type=int, default=20)
    a = ap.parse_args()
    rows = list(csv.DictReader((a.run / "per_query.csv").open()))
    base = np.array([ndcg_at_10(r["base_rank"]) for r in rows])
    tuned = np.array([ndcg_at_10(r["finetuned_rank"]) for r in rows])
    metrics = json.loads((a.run / "results.json").read_text())["metrics"]
    assert abs(base.mean() - metrics["base"]["ndcg@10"]) < 1e-9, "more than one relevant document per query?"
    assert abs(tuned.mean() - metrics["finetuned"]["ndcg@10"]) < 1e-9
    diff = tuned - base
    print(f"{len(diff)} queries; nDCG@10 delta {diff.mean():+.4f}; {np.mean(diff != 0):.0%} of queries moved\n")
    print("| method | resamples | mean interval | low: max - min over seeds | high: max - min | s for 8 metrics (CI + p) |")
    print("|---|---|---|---|---|---|")
    for method in ("percentile", "BCa"):
        for n in (1000, 10000):
            ends = np.array([interval(diff, method, n, seed) for seed in range(a.seeds)])
            start = time.perf_counter()
            for _ in range(8):
                interval(diff, method, n, 0)
                paired_randomization_p(base, tuned, n, 0)
            cost = time.perf_counter() - start
            low, high = ends.mean(axis=0)
            print(
                f"| {method} | {n:,} | [{low:+.4f}, {high:+.4f}] | {np.ptp(ends[:, 0]):.4f} | "
                f"{np.ptp(ends[:, 1]):.4f} | {cost:.2f} |"
            )
    print(f"\nruntime default (BCa, 10,000): {paired_bootstrap_ci(base, tuned, 10000, 42)}")


if __name__ == "__main__":
    main()
