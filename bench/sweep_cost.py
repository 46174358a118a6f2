"""What a sweep costs, run by hand: `python bench/sweep_cost.py [--docs N] [--steps N]`.

Prints, measured in this run on all-MiniLM-L6-v2 and the built-in corpus:
  (1) a 4-job learning-rate sweep's wall time / (shared stages once + 4 x one job's own work)
      (goal <= 1.15: the stage cache makes the jobs pay only for what differs)
  (2) the shared-stage time of an identical second run / the first's (goal < 0.05)
Shared stages: load, chunk, split, generate, eval_set, evaluate_base. A job's own work: load_model,
finetune, evaluate_finetuned.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ("load", "chunk", "split", "generate", "eval_set", "evaluate_base")
OWN = ("load_model", "finetune", "evaluate_finetuned")


def runner(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "runner", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=30, help="corpus.max_documents")
    ap.add_argument("--steps", type=int, default=8, help="finetune.max_steps per job")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sweep_cost."))
    common = ["logger=none", f"corpus.max_documents={a.docs}", f"finetune.max_steps={a.steps}",
              "finetune.batch_size=16", f"paths.root={tmp}/outputs"]

    runner(*common, f"hydra.run.dir={tmp}/single", "cache.dir=" + str(tmp / "cache_single"))
    single = json.loads((tmp / "single" / "results.json").read_text())["timings_s"]
    shared = sum(single.get(k, 0) for k in SHARED)
    own = sum(single.get(k, 0) for k in OWN)

    sweep_wall = runner("-m", *common, "finetune.learning_rate=1e-5,3e-5,5e-5,1e-4",
                        f"hydra.sweep.dir={tmp}/sweep", "cache.dir=" + str(tmp / "cache_sweep"))
    runner(*common, f"hydra.run.dir={tmp}/again", "cache.dir=" + str(tmp / "cache_single"))
    again = json.loads((tmp / "again" / "results.json").read_text())
    shared_again = sum(again["timings_s"].get(k, 0) for k in SHARED)

    print(f"single job: shared stages {shared:.1f}s, own work {own:.1f}s ({single})")
    print(f"\n{'measure':62} {'ratio':>7}  goal")
    print(f"{'(1) 4-job sweep wall / (shared once + 4 x own)':62} {sweep_wall / (shared + 4 * own):7.2f}  <= 1.15"
          f"   ({sweep_wall:.1f}s / {shared + 4 * own:.1f}s)")
    print(f"{'(2) shared stages, identical second run / first':62} {shared_again / shared:7.3f}  < 0.05"
          f"   ({shared_again:.2f}s / {shared:.2f}s; cache: {again['cache']})")


if __name__ == "__main__":
    main()
