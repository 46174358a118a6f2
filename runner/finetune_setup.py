"""The finetune method's settings that depend on the rest of the run: mined hard negatives when
`hard_negatives.num` is null (auto), and, for a method with a time budget, the dev scoring of its epochs
and the dict it reports its choices in."""

from __future__ import annotations

import functools
import logging

from omegaconf import DictConfig, OmegaConf

from runner.data.eval_set import EvalSet
from runner.data_stages import reads_pairs_from_file
from runner.stages.evaluate.retrievers import depth

log = logging.getLogger("ragtune")


def finetune_overrides(
    cfg: DictConfig, dev: EvalSet | None = None, metric: str = "", precision: str = "fp32", report: dict | None = None
) -> dict:
    """Settings of `cfg.finetune` that depend on the rest of the run: hard_negatives.num=null (auto), and
    for a method with a time budget the dev scoring of its epochs and the dict it reports its choices in."""
    out = {}
    if "time_budget_s" in cfg.finetune:
        from runner.stages.evaluate.scoring import dev_scores
        from runner.stages.finetune.trainer import DevScoring

        out["report"] = report if report is not None else {}
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
    if "hard_negatives" not in cfg.finetune or cfg.finetune.hard_negatives.num is not None:
        return out
    from runner.stages.finetune.mining import resolve_hard_negatives

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
