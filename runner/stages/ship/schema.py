"""The `guard` schema (extra eval sets a finetuned model must not lose on), and the checks of its knobs.

Kept cheap to import: `python -m runner --cfg job` reads it through `runner.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict


@dataclass
class GuardConfig:
    # extra eval sets, each scored base vs finetuned: {name: {kind: beir|file, path: ..., split: test}}
    sets: Dict[str, Any] = field(default_factory=dict)
    tolerance: float = 0.01  # a finetuned model that loses more than this on a guard is flagged, not shipped


def problems(cfg) -> list[str]:
    """What the `guard` types cannot say: a tolerance of 0 or more, and guard sets that read."""
    p: list[str] = []
    if cfg.guard.tolerance < 0:
        p.append(f"guard.tolerance={cfg.guard.tolerance} must be 0 or more (try 0.01)")
    for name, spec in (cfg.guard.sets or {}).items():
        path, kind = spec.get("path"), spec.get("kind")
        if kind not in ("file", "beir") or not path:
            p.append(
                f"guard.sets.{name} needs kind: file or beir and a path; for example "
                f"+guard.sets.{name}={{kind: beir, path: data/nfcorpus, split: test}}"
            )
        elif kind == "file":
            from runner.data.pairs import qa_file_problems  # llama-index: only when there is a file to read

            p += qa_file_problems(path, f"guard.sets.{name}.path")
        else:
            from runner.data.beir import beir_problems

            p += beir_problems(path, spec.get("split", "test"), key=f"guard.sets.{name}.path")
    return p
