"""What the stage cache costs and saves, run by hand:

    python bench/sweep_cost.py                      # this checkout
    python bench/sweep_cost.py --baseline d4ff1f7   # and a git ref beside it, measured in the same run
    python bench/sweep_cost.py --default-run        # also the default experiment, cold and warm

For each code tree (this checkout; with --baseline, that ref checked out into a temporary git
worktree and run with the same Python), measured on all-MiniLM-L6-v2 and the built-in corpus:
  (1) a 3-job learning-rate sweep (`-m finetune.learning_rate=...`, `finetune.max_steps` small): its
      wall time, and which stages jobs 2 and 3 computed (the shared ones must all be cache hits);
  (2) the shared-stage time of an identical second run / the first's (goal < 0.05);
  (3) the seconds spent deriving cache keys (`timings_s.cache_keys`: hashing input files, models,
      code and library versions; the baseline has no such line);
  (4) with --default-run: `python -m runner logger=none` end to end, cold cache then warm.
Each row gives both trees' numbers and after / before. The precision of every run is printed.
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
SHARED = ("load", "chunk", "split", "generate", "eval_set", "base_embeddings", "evaluate_base")


def runner(tree: Path, *args: str) -> float:
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=tree,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(tree)},
    )
    return time.perf_counter() - start


def results(path: Path) -> dict:
    return json.loads((path / "results.json").read_text())


def measure(tree: Path, tmp: Path, docs: int, steps: int, default_run: bool) -> dict:
    common = [
        "logger=none",
        f"corpus.max_documents={docs}",
        f"finetune.max_steps={steps}",
        "finetune.batch_size=16",
        f"paths.root={tmp}/outputs",
    ]
    out: dict = {}
    runner(tree, *common, f"hydra.run.dir={tmp}/single", f"cache.dir={tmp}/cache_single")
    first = results(tmp / "single")
    runner(tree, *common, f"hydra.run.dir={tmp}/again", f"cache.dir={tmp}/cache_single")
    again = results(tmp / "again")
    out["shared_first_s"] = sum(first["timings_s"].get(k, 0) for k in SHARED)
    out["shared_again_s"] = sum(again["timings_s"].get(k, 0) for k in SHARED)
    out["keys_first_s"] = first["timings_s"].get("cache_keys")
    out["keys_again_s"] = again["timings_s"].get("cache_keys")
    out["again_cache"] = again["cache"]
    out["precision"] = first.get("precision")

    out["sweep_wall_s"] = runner(
        tree,
        "-m",
        *common,
        "finetune.learning_rate=1e-5,3e-5,5e-5",
        f"hydra.sweep.dir={tmp}/sweep",
        f"cache.dir={tmp}/cache_sweep",
    )
    jobs = sorted(
        (p for p in (tmp / "sweep").iterdir() if (p / "results.json").is_file()), key=lambda p: int(p.name.split("_")[0])
    )
    out["sweep_jobs"] = [{"cache": results(j)["cache"], "timings": results(j)["timings_s"]} for j in jobs]
    if default_run:
        for label in ("cold", "warm"):
            out[f"default_{label}_s"] = runner(
                tree,
                "logger=none",
                f"hydra.run.dir={tmp}/default_{label}",
                f"paths.root={tmp}/outputs",
                f"cache.dir={tmp}/cache_default",
            )
            out[f"default_{label}_keys_s"] = results(tmp / f"default_{label}")["timings_s"].get("cache_keys")
            out[f"default_{label}_cache"] = results(tmp / f"default_{label}")["cache"]
    return out


def worktree(ref: str, where: Path) -> Path:
    subprocess.run(
        ["git", "worktree", "add", "--detach", str(where), ref],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return where


def fmt(value) -> str:
    return "—" if value is None else f"{value:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", help="a git ref to measure beside this checkout (e.g. the commit before a change)")
    ap.add_argument("--docs", type=int, default=30, help="corpus.max_documents")
    ap.add_argument("--steps", type=int, default=8, help="finetune.max_steps per job")
    ap.add_argument("--default-run", action="store_true", help="also time the default experiment, cold and warm")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweep_cost."))
    trees = {"after": ROOT}
    if a.baseline:
        trees = {"before": worktree(a.baseline, tmp / "baseline"), **trees}
    try:
        measured = {name: measure(tree, tmp / name, a.docs, a.steps, a.default_run) for name, tree in trees.items()}
    finally:
        if a.baseline:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "baseline")], cwd=ROOT)
    names = list(measured)
    precisions = ", ".join(f"{n} {m['precision']}" for n, m in measured.items())
    print(f"precision: {precisions}; {os.cpu_count()} CPUs; corpus.max_documents={a.docs}, finetune.max_steps={a.steps}\n")
    rows = [
        ("3-job sweep, wall s", "sweep_wall_s"),
        ("shared stages, first run s", "shared_first_s"),
        ("shared stages, identical second run s", "shared_again_s"),
        ("cache keys, first run s", "keys_first_s"),
        ("cache keys, second run s", "keys_again_s"),
    ]
    if a.default_run:
        rows += [
            ("default run, cold cache, wall s", "default_cold_s"),
            ("default run, warm cache, wall s", "default_warm_s"),
            ("default run, cache keys s (cold)", "default_cold_keys_s"),
            ("default run, cache keys s (warm)", "default_warm_keys_s"),
        ]
    print(f"{'measure':42}" + "".join(f"{n:>10}" for n in names) + ("   after/before" if len(names) == 2 else ""))
    for label, key in rows:
        values = [measured[n].get(key) for n in names]
        ratio = f"   {values[1] / values[0]:.3f}" if len(values) == 2 and values[0] and values[1] is not None else ""
        print(f"{label:42}" + "".join(f"{fmt(v):>10}" for v in values) + ratio)
    for n in names:
        m = measured[n]
        print(
            f"\n{n}: shared/again ratio {m['shared_again_s'] / m['shared_first_s']:.3f} (goal < 0.05); "
            f"second run cache {m['again_cache']}"
        )
        for i, job in enumerate(m["sweep_jobs"]):
            computed = [s for s, v in job["cache"].items() if v != "hit" and s in SHARED]
            print(
                f"  sweep job {i}: shared stages computed: {computed or 'none (all hits)'}; "
                f"seconds: {', '.join(f'{k} {v:.2f}' for k, v in job['timings'].items())}"
            )
        if a.default_run:
            print(f"  default run warm cache: {m['default_warm_cache']}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
