"""The run's evaluation around training, in the order `pipeline.experiment` calls it: what training
needs kept from before it (BM25's rankings, the base model's eval ranking, the guards' base, the base
weights for merging), the merge on dev after it (WiSE-FT), and every row the verdict weighs (the dense
models, BM25 and the hybrids). The guard sets: runner/stages/evaluate/guards.py."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from runner.data.eval_set import EvalSet
from runner.data.rows import BASE, FINETUNED, HYBRID_BASE, HYBRID_FINETUNED, MERGED
from runner.stages.evaluate.before_training import BeforeTraining
from runner.stages.evaluate.guards import guard_sets
from runner.stages.evaluate.merge import choose_merge
from runner.stages.evaluate.retrievers import Before, depth, lexical_rankings, rows_and_fusions
from runner.stages.evaluate.scoring import EvalResult, dense_top

log = logging.getLogger("ragtune")


def rankings_before(
    cfg,
    model,
    *,
    model_id: str,
    base: EvalResult,
    base_index,
    dev: EvalSet | None,
    eval_set: EvalSet,
    precision: str,
    base_eval,
    decided: BeforeTraining,
) -> Before:
    """What the rows and the guards need from before training: BM25's rankings (dev and eval), the base
    model's eval ranking and the guards' base evaluations. `decided`: the choices made on the training side
    (BM25, the base hybrid's fusion); `base_index()`: the base model's eval corpus embeddings (the cached
    stage); `base_eval(eval_set)`: the base model's (cached) evaluation of another eval set, for the guards."""
    before = Before(bm25=decided.bm25, fusion_base=decided.fusion, base_dev_scores=decided.base_dev_scores)
    before.guard_base = {name: (guard, base_eval(guard)) for name, guard in guard_sets(cfg).items()}
    if not cfg.evaluate.baselines.enabled:
        return before
    lexical_rankings(cfg, dev, eval_set, before)
    k, batch = depth(cfg), cfg.evaluate.batch_size
    index, query_emb = base.dense if base.dense is not None else (base_index(), None)
    before.base_dense_eval = dense_top(model, model_id, eval_set, k, batch, precision, index, query_emb)
    return before


def base_weights(cfg, model, dev: EvalSet | None) -> dict | None:
    """A copy of the base weights, kept before training changes them in place: what merging needs."""
    if not cfg.merge.enabled or dev is None or not cfg.finetune.get("_target_"):
        return None
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def merge_on_dev(
    cfg,
    base_state: dict | None,
    tuned_model,
    *,
    before: Before,
    dev: EvalSet | None,
    metric: str,
    precision: str,
    model_dir: Path,
    tuned_dev=None,
    adapter: str | None = None,
) -> tuple[object | None, dict, object]:
    """WiSE-FT on the dev split; a merge that wins there is saved as `model_dir` (the finetuned model
    moves beside it, to finetuned_model/). `tuned_dev`: the finetuned model's dev ranking when training
    scored its epochs; `adapter`: the adapter's class for finetune=adapter (no base weights moved: nothing
    to merge). Returns (the merged model or None, the record, the dev ranking of the run's model or None)."""
    if not cfg.merge.enabled:
        return None, {"kept": False, "reason": "merge.enabled=false"}, None
    if dev is None or base_state is None:
        return None, {"kept": False, "reason": "no dev split to choose a merge weight on"}, None
    if adapter is not None:
        return None, {"kept": False, "reason": "finetune=adapter leaves the base weights as they are"}, None
    merged, record, ranking = choose_merge(
        base_state,
        tuned_model,
        dev,
        alphas=cfg.merge.alphas,
        metric=metric,
        batch_size=cfg.evaluate.batch_size,
        precision=precision,
        k=depth(cfg),
        base_dev_scores=before.base_dev_scores,
        n_resamples=cfg.evaluate.bootstrap,
        seed=cfg.seed,
        tuned_dev=tuned_dev,
    )
    log.info("merge: %s", record["reason"])
    if merged is not None:
        model_dir = Path(model_dir)
        tuned_dir = model_dir.parent / "finetuned_model"
        shutil.rmtree(tuned_dir, ignore_errors=True)
        model_dir.rename(tuned_dir)
        merged.save(str(model_dir))
        record["finetuned_model_dir"] = str(tuned_dir)
    return merged, record, ranking


def shippable_rows(
    cfg,
    before: Before,
    *,
    base: EvalResult,
    tuned: EvalResult | None,
    merged: EvalResult | None,
    run_model,
    run_result: EvalResult | None,
    dev: EvalSet | None,
    eval_set: EvalSet,
    metric: str,
    precision: str,
    run_dev=None,
) -> tuple[dict, dict, dict]:
    """({row: EvalResult} for every retriever the verdict weighs, {hybrid row: its fusion settings}, {choice
    name: record} of the choices made here: the finetuned hybrid's weight on dev). `run_dev`: the run's
    model's dev ranking when merging made it already."""
    rows = {BASE: base}
    if tuned is not None:
        rows[FINETUNED] = tuned
    if merged is not None:
        rows[MERGED] = merged
    if not cfg.evaluate.baselines.enabled:
        return rows, {}, {}
    dense, dense_dev = {HYBRID_BASE: before.base_dense_eval}, {}
    if run_model is not None:
        k, batch = depth(cfg), cfg.evaluate.batch_size
        index, query_emb = run_result.dense if run_result.dense is not None else (None, None)
        dense[HYBRID_FINETUNED] = dense_top(run_model, "run", eval_set, k, batch, precision, index, query_emb)
        dense_dev[HYBRID_FINETUNED] = (
            run_dev if run_dev is not None or dev is None else dense_top(run_model, "run", dev, k, batch, precision)
        )
    more, fusions, records = rows_and_fusions(cfg, before, dense, dense_dev, eval_set, dev, metric)
    return {**rows, **more}, fusions, records
