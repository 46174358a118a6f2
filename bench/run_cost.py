"""What the default run costs, stage by stage, against a baseline measured in the same session:

    python bench/run_cost.py --baseline c6483da                     # precision=auto
    python bench/run_cost.py --baseline c6483da --precision fp32    # as on CPUs without bf16
    python bench/run_cost.py --baseline c6483da -- corpus.max_documents=200   # runner overrides for both
    python bench/run_cost.py --baseline c6483da --keep outputs/run_cost      # keep both run directories

Each tree (the baseline ref checked out into a temporary git worktree, then this checkout) runs
`python -m runner logger=none precision=P` once, cold (its own empty cache), one after the other, never
at the same time. Printed: the wall time of each, every stage's seconds side by side (a stage one tree
lacks shows "—"), the stages only the checkout has with their share of the baseline's wall, and
after / before. The precision each run used is printed from its results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(tree: Path, out: Path, precision: str, overrides: list[str]) -> tuple[float, dict]:
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "runner",
            "logger=none",
            f"precision={precision}",
            f"hydra.run.dir={out}/run",
            f"paths.root={out}/outputs",
            f"cache.dir={out}/cache",
            *overrides,
        ],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree)},
    )
    return time.perf_counter() - start, json.loads((out / "run" / "results.json").read_text())


def fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", required=True, help="the git ref to measure before this checkout")
    ap.add_argument("--precision", default="auto", help="the runner's precision for both trees")
    ap.add_argument("--keep", type=Path, help="keep both runs' directories here (before/, after/)")
    ap.add_argument("overrides", nargs="*", help="runner overrides after --, for both trees")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="run_cost."))
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(tmp / "tree"), a.baseline],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        measured = {
            "before": run(tmp / "tree", tmp / "before", a.precision, a.overrides),
            "after": run(ROOT, tmp / "after", a.precision, a.overrides),
        }
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "tree")], cwd=ROOT)
    (wall_b, before), (wall_a, after) = measured["before"], measured["after"]
    tb, ta = before["timings_s"], after["timings_s"]
    print(
        f"baseline {a.baseline}; precision before {before.get('precision')}, after {after.get('precision')}; "
        f"{os.cpu_count()} CPUs; overrides {a.overrides or 'none'}\n"
    )
    print(f"{'stage':28}{'before s':>10}{'after s':>10}{'after/before':>14}")
    for stage in list(tb) + [s for s in ta if s not in tb]:
        b, f = tb.get(stage), ta.get(stage)
        ratio = f"{f / b:.3f}" if b and f is not None else ""
        print(f"{stage:28}{fmt(b):>10}{fmt(f):>10}{ratio:>14}")
    print(f"{'wall (whole command)':28}{wall_b:>10.2f}{wall_a:>10.2f}{wall_a / wall_b:>14.3f}")
    added = {s: v for s, v in ta.items() if s not in tb}
    grown = ta.get("statistics", 0) - tb.get("statistics", 0)
    total = sum(added.values()) + max(grown, 0)
    print(
        f"\nstages only after has: {', '.join(f'{s} {v:.2f}' for s, v in added.items()) or 'none'}"
        f"; statistics grew by {grown:+.2f}"
    )
    print(f"their seconds: {total:.2f} = {100 * total / wall_b:.1f}% of the baseline's wall")
    print("\nnDCG@10 (same run):")
    for name, res in (("before", before), ("after", after)):
        rows = {
            r: v["ndcg@10"]
            for r, v in res["metrics"].items()
            if isinstance(v, dict) and "ndcg@10" in v and r not in ("delta", "delta_p", "delta_ci95")
        }
        print(
            f"  {name:7}"
            + "  ".join(f"{r} {v:.4f}" for r, v in rows.items())
            + f"  verdict {res.get('verdict', {}).get('deploy', '-')}"
        )
    if a.keep:
        for name in ("before", "after"):
            shutil.copytree(tmp / name / "run", a.keep / name, dirs_exist_ok=True)
        print(f"\nthe runs: {a.keep}/before, {a.keep}/after")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
