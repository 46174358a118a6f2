"""Two runs on the same eval questions, paired question by question. Run by hand:

    python bench/paired.py BEFORE AFTER [--metric ndcg@10]

BEFORE and AFTER are run dirs (their per_query.csv has each row's per-question score, `<row>_<metric>`) or,
for a run made before per_query.csv had those columns, its choice table from `bench/priors.py tables`
(outputs/bench/choices/<run>.json: the rows rebuilt as the run chose). Prints, for the verdict's row of each
run and for every row both scored, the two scores and the paired 95% BCa interval of (after - before), which
is what "no verdict lower than before beyond its interval" reads. The questions must be the same ones.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402


def per_question(path: Path, metric: str) -> tuple[dict, list[str], str, Path]:
    """({row: per-question scores}, the question ids, the verdict's row, the run dir)."""
    if path.is_file():  # a choice table
        t = json.loads(path.read_text())
        run = Path(t["run"])
        qids = _ids(run)
        rows = {r: np.asarray(v) for r, v in t["rows"].items()}
    else:
        run = path
        with (run / "per_query.csv").open(newline="") as f:
            table = list(csv.DictReader(f))
        qids = [r["query_id"] for r in table]
        suffix = f"_{metric}"
        names = [c.removesuffix(suffix) for c in table[0] if c.endswith(suffix)] if table else []
        if not names:
            sys.exit(f"{run}/per_query.csv has no {suffix} columns: give its choice table (bench/priors.py tables) instead.")
        rows = {n: np.array([float(r[n + suffix]) for r in table]) for n in names}
    verdict = json.loads((run / "results.json").read_text())["verdict"]["deploy"]
    return rows, qids, verdict, run


def _ids(run: Path) -> list[str]:
    with (run / "per_query.csv").open(newline="") as f:
        return [r["query_id"] for r in csv.DictReader(f)]


def main() -> None:
    from runner.infra.metrics import paired_bootstrap_ci

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    ap.add_argument("--metric", default="ndcg@10")
    a = ap.parse_args()
    rows_b, ids_b, verdict_b, run_b = per_question(a.before, a.metric)
    rows_a, ids_a, verdict_a, run_a = per_question(a.after, a.metric)
    if ids_b != ids_a:
        sys.exit(f"{run_b} and {run_a} scored different eval questions ({len(ids_b)} and {len(ids_a)}): nothing to pair.")

    def line(label: str, before: np.ndarray, after: np.ndarray) -> str:
        low, high = paired_bootstrap_ci(before, after)
        delta = after.mean() - before.mean()
        return f"  {label:34} {before.mean():.4f} -> {after.mean():.4f}  {delta:+.4f} [{low:+.4f}, {high:+.4f}]"

    print(f"{run_b} -> {run_a}: {len(ids_a)} questions, {a.metric}, after - before with its paired 95% BCa interval")
    print(line(f"verdict: {verdict_b} -> {verdict_a}", rows_b[verdict_b], rows_a[verdict_a]))
    for row in rows_a:
        if row in rows_b:
            print(line(row, rows_b[row], rows_a[row]))


if __name__ == "__main__":
    main()
