"""The `split` and `dev` schemas (the held-out split and the dev split), and the checks of their knobs.

Kept cheap to import: `python -m runner --cfg job` reads these through `runner.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass
class SplitConfig:
    val_fraction: float = 0.2  # share of chunks held out for evaluation, as whole documents
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class DevConfig:
    # share of the training side held out for the choices that need questions the trained model never saw
    # (the epoch, the merge weight, the finetuned hybrid's weight): whole documents of generated pairs,
    # whole groups of pairs sharing a passage for pairs from a file. Its questions also count, with the
    # training pairs', for the choices made before training. 0: no dev split (no merging; the finetuned
    # hybrid keeps the base hybrid's fusion; the choices before training use the training pairs alone)
    fraction: float = 0.15
    path: Optional[str] = None  # a dev file (EmbeddingQAFinetuneDataset JSON) instead; training keeps every pair
    seed: int = "${seed}"  # type: ignore[assignment]  # which documents (or groups of pairs) the dev split takes


def problems(cfg) -> list[str]:
    """What the `split` and `dev` types cannot say: fractions in range, and a dev file that reads."""
    p: list[str] = []
    if not 0 < cfg.split.val_fraction < 1:
        p.append(f"split.val_fraction={cfg.split.val_fraction} must be between 0 and 1 (try 0.2)")
    if not 0 <= cfg.dev.fraction < 1:
        p.append(f"dev.fraction={cfg.dev.fraction} must be in [0, 1) (0: no dev split; try 0.15)")
    if cfg.dev.path is not None:
        from runner.data.pairs import qa_file_problems  # llama-index: only when there is a file to read

        p += qa_file_problems(cfg.dev.path, "dev.path")
    return p
