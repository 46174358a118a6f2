"""Guard sets (`guard.sets`): other eval sets a trained model must not lose too much on. Each is scored by
the base model before training (cached) and by the trained model(s) after; a loss beyond `guard.tolerance`,
clearly below 0, flags the trained rows for the verdict."""

from __future__ import annotations

import logging

from omegaconf import OmegaConf

from runner.data.eval_set import EvalSet
from runner.data.rows import FINETUNED, HYBRID_FINETUNED, MERGED, TRAINED
from runner.infra.metrics import Paired
from runner.stages.evaluate.eval_sets import read_eval_set
from runner.stages.evaluate.retrievers import Before
from runner.stages.evaluate.scoring import evaluate_model

log = logging.getLogger("ragtune")


def guard_sets(cfg) -> dict[str, EvalSet]:
    """{name: EvalSet} of `guard.sets` (checked up front by validate)."""
    sets = {}
    for name, spec in (cfg.guard.sets or {}).items():
        spec = OmegaConf.create({"split": "test", **OmegaConf.to_container(spec, resolve=True)})
        sets[name] = read_eval_set(spec, {}, key=f"guard.sets.{name}.path")
    return sets


def score_guards(
    cfg, before: Before, *, run_model, tuned_model, merged_kept: bool, precision: str, metric: str
) -> tuple[dict, dict]:
    """Each guard set scored by the base and the trained model(s); a trained model that loses more than
    `guard.tolerance` on the deciding metric, with an interval below 0, is flagged for the verdict."""
    out, flagged = {}, {}
    models = {FINETUNED: tuned_model, **({MERGED: run_model} if merged_kept else {})}
    for name, (guard, base) in before.guard_base.items():
        entry = {"base": base.metrics, "queries": len(base.query_ids)}
        for row, model in models.items():
            if model is None:
                continue
            result = evaluate_model(model, guard, cfg.evaluate, cfg.evaluate.batch_size, model_id=row, precision=precision)
            paired = Paired.of(base.per_query[metric], result.per_query[metric], cfg.evaluate.bootstrap, cfg.seed, p=False)
            (low, high), delta = paired.ci95, result.metrics[metric] - base.metrics[metric]
            hurt = delta < -cfg.guard.tolerance and high < 0
            entry[row] = {"metrics": result.metrics, "delta": delta, "ci95": [low, high], "flagged": hurt}
            if hurt:
                why = (
                    f"guard {name}: {metric} {delta:+.4f} [{low:+.4f}, {high:+.4f}] beyond guard.tolerance={cfg.guard.tolerance}"
                )
                log.warning("%s (%s)", why, row)
                for r in [row, HYBRID_FINETUNED] if row == (MERGED if merged_kept else FINETUNED) else [row]:
                    flagged[r] = why
        out[name] = entry
    assert set(flagged) <= set(TRAINED)
    return out, flagged
