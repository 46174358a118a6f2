"""The finetune method's settings that depend on the rest of the run: mined hard negatives when
`hard_negatives.num` is null (auto), and, for a method with a time budget, the dev scoring of its epochs
and the dict it reports its choices in; and what its planned training costs at a window, for the window's
choice before training (`window_cost`)."""

from __future__ import annotations

import functools
import logging
from typing import Callable

from omegaconf import DictConfig, OmegaConf

from runner.data.eval_set import EvalSet
from runner.data_stages import reads_pairs_from_file
from runner.stages.evaluate.retrievers import depth
from runner.stages.evaluate.scoring import dev_scores
from runner.stages.finetune.mining import resolve_hard_negatives
from runner.stages.finetune.schema import method
from runner.stages.finetune.trainer import COST_KNOBS, DevScoring, training_cost

log = logging.getLogger("ragtune")


def finetune_overrides(
    cfg: DictConfig,
    dev: EvalSet | None = None,
    metric: str = "",
    precision: str = "fp32",
    report: dict | None = None,
    window_choice: dict | None = None,
) -> dict:
    """Settings of `cfg.finetune` that depend on the rest of the run: hard_negatives.num=null (auto), and
    for a method with a time budget the dev scoring of its epochs, the dict it reports its choices in, and
    the plain step's seconds the window's choice measured at the chosen window (`window_choice`: its record)."""
    out = {}
    trainer = method(cfg.finetune) == "sentence_transformers"  # the method with a time budget and mined negatives
    if trainer:
        out["report"] = report if report is not None else {}
        measured = [c for c in (window_choice or {}).get("training_cost", []) if c["window"] == window_choice["chosen"]]
        if measured and measured[0].get("seconds_per_plain_step"):
            out["step_seconds"] = measured[0]["seconds_per_plain_step"]
        if dev is not None:
            out["dev"] = DevScoring(
                functools.partial(
                    dev_scores,
                    model_id="epoch",
                    dev=dev,
                    metric=metric,
                    k=depth(cfg),
                    batch_size=cfg.evaluate.batch_size,
                    precision=precision,
                ),
                metric,
                len(dev.corpus) + len(dev.answered_query_ids()),
                cfg.evaluate.bootstrap,
                cfg.seed,
            )
    if not trainer or cfg.finetune.hard_negatives.num is not None:
        return out
    from_file = reads_pairs_from_file(cfg)
    hard = {
        **OmegaConf.to_container(cfg.finetune.hard_negatives, resolve=True),
        "num": resolve_hard_negatives(None, from_file),
        "auto": True,
    }
    why = "pairs from a file: one mined negative each" if from_file else "pairs generated in the run: in-batch only"
    log.info("finetune: hard_negatives.num auto -> %d (%s)", hard["num"], why)
    if "report" in out:
        out["report"]["hard_negatives"] = {"setting": None, "chosen": hard["num"], "reason": why}
    return {**out, "hard_negatives": hard}


def window_cost(cfg: DictConfig, model, pairs, device: str) -> tuple[Callable[[int], dict] | None, dict | None]:
    """(window -> what the planned training would cost at it (`trainer.training_cost`), the settings that
    decide that cost, for the choice's cache key), or (None, None) where the time buys nothing a window would
    take away: no training pairs, no time budget, or no mined negatives planned."""
    if pairs is None or method(cfg.finetune) != "sentence_transformers" or cfg.finetune.time_budget_s is None:
        return None, None
    negatives = resolve_hard_negatives(cfg.finetune.hard_negatives.num, reads_pairs_from_file(cfg))
    if negatives <= 0:
        return None, None
    settings = {**OmegaConf.to_container(cfg.finetune, resolve=True), "device": device}
    key = {**{k: settings[k] for k in COST_KNOBS}, "negatives": negatives}  # the pairs: in the training side's digest
    return functools.partial(training_cost, model, pairs, negatives=negatives, settings=settings), key
