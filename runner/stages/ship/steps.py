"""The run's steps from the base evaluation to the verdict, in the order `pipeline.run` calls them:
what training needs from before it (BM25's rankings, the guards' base), merging after it, the keyword and hybrid rows, the
guard sets, and what to ship (`retriever.json`, the model card's data hashes)."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

from omegaconf import OmegaConf

from runner.data.eval_set import EvalSet
from runner.stages.evaluate.eval_sets import read_eval_set
from runner.stages.evaluate.scoring import EvalResult, dense_top, evaluate_model
from runner.infra.metrics import paired_bootstrap_ci
from runner.stages.evaluate.before_training import BeforeTraining
from runner.stages.evaluate.retrievers import Before, depth, lexical_rankings, rows_and_fusions
from runner.stages.ship.retriever import retriever_spec, write_spec
from runner.stages.ship.verdict import TRAINED

log = logging.getLogger("ragtune")


def before_training(
    cfg,
    model,
    model_id: str,
    base: EvalResult,
    base_index,
    dev: EvalSet | None,
    eval_set: EvalSet,
    precision: str,
    base_eval,
    decided: BeforeTraining,
) -> Before:
    """`decided`: the choices made on the training side (BM25, the base hybrid's fusion); `base_index()`: the
    base model's eval corpus embeddings (the cached stage); `base_eval(eval_set)`: the base model's (cached)
    evaluation of another eval set, for the guards."""
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
    before: Before,
    dev: EvalSet | None,
    metric: str,
    precision: str,
    model_dir: Path,
    tuned_dev=None,
) -> tuple[object | None, dict, object]:
    """WiSE-FT on the dev split; a merge that wins there is saved as `model_dir` (the finetuned model
    moves beside it, to finetuned_model/). `tuned_dev`: the finetuned model's dev ranking when training
    scored its epochs. Returns (the merged model or None, the record, the dev ranking
    of the run's model or None)."""
    if not cfg.merge.enabled:
        return None, {"kept": False, "reason": "merge.enabled=false"}, None
    if dev is None or base_state is None:
        return None, {"kept": False, "reason": "no dev split to choose a merge weight on"}, None
    if getattr(tuned_model, "adapter", None) is not None:
        return None, {"kept": False, "reason": "finetune=adapter leaves the base weights as they are"}, None
    from runner.stages.evaluate.merge import choose_merge

    merged, record, ranking = choose_merge(
        base_state,
        tuned_model,
        dev,
        cfg.merge.alphas,
        metric,
        cfg.evaluate.batch_size,
        precision,
        depth(cfg),
        before.base_dev_scores,
        cfg.evaluate.bootstrap,
        cfg.seed,
        tuned_dev,
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
    base: EvalResult,
    tuned: EvalResult | None,
    merged: EvalResult | None,
    run_model,
    run_result: EvalResult | None,
    dev: EvalSet | None,
    eval_set: EvalSet,
    metric: str,
    precision: str,
    choices: dict,
    run_dev=None,
) -> tuple[dict, dict]:
    """{row: EvalResult} for every retriever the verdict weighs, and each hybrid's fusion settings.
    `run_dev`: the run's model's dev ranking when merging made it already."""
    rows = {"base": base}
    if tuned is not None:
        rows["finetuned"] = tuned
    if merged is not None:
        rows["merged"] = merged
    if not cfg.evaluate.baselines.enabled:
        return rows, {}
    dense, dense_dev = {"hybrid_base": before.base_dense_eval}, {}
    if run_model is not None:
        k, batch = depth(cfg), cfg.evaluate.batch_size
        index, query_emb = run_result.dense if run_result.dense is not None else (None, None)
        dense["hybrid_finetuned"] = dense_top(run_model, "run", eval_set, k, batch, precision, index, query_emb)
        dense_dev["hybrid_finetuned"] = (
            run_dev if run_dev is not None or dev is None else dense_top(run_model, "run", dev, k, batch, precision)
        )
    more, fusions = rows_and_fusions(cfg, before, dense, dense_dev, eval_set, dev, metric, choices)
    return {**rows, **more}, fusions


def guard_sets(cfg) -> dict[str, EvalSet]:
    """{name: EvalSet} of `guard.sets` (checked up front by validate)."""
    sets = {}
    for name, spec in (cfg.guard.sets or {}).items():
        spec = OmegaConf.create({"split": "test", **OmegaConf.to_container(spec, resolve=True)})
        sets[name] = read_eval_set(spec, {}, key=f"guard.sets.{name}.path")
    return sets


def score_guards(
    cfg, before: Before, run_model, tuned_model, merged_kept: bool, precision: str, metric: str
) -> tuple[dict, dict]:
    """Each guard set scored by the base and the trained model(s); a trained model that loses more than
    `guard.tolerance` on the deciding metric, with an interval below 0, is flagged for the verdict."""
    out, flagged = {}, {}
    models = {"finetuned": tuned_model, **({"merged": run_model} if merged_kept else {})}
    for name, (guard, base) in before.guard_base.items():
        entry = {"base": base.metrics, "queries": len(base.query_ids)}
        for row, model in models.items():
            if model is None:
                continue
            result = evaluate_model(model, guard, cfg.evaluate, cfg.evaluate.batch_size, model_id=row, precision=precision)
            low, high = paired_bootstrap_ci(base.per_query[metric], result.per_query[metric], cfg.evaluate.bootstrap, cfg.seed)
            delta = result.metrics[metric] - base.metrics[metric]
            hurt = delta < -cfg.guard.tolerance and high < 0
            entry[row] = {"metrics": result.metrics, "delta": delta, "ci95": [low, high], "flagged": hurt}
            if hurt:
                why = (
                    f"guard {name}: {metric} {delta:+.4f} [{low:+.4f}, {high:+.4f}] beyond guard.tolerance={cfg.guard.tolerance}"
                )
                log.warning("%s (%s)", why, row)
                for r in [row, "hybrid_finetuned"] if row == ("merged" if merged_kept else "finetuned") else [row]:
                    flagged[r] = why
        out[name] = entry
    assert set(flagged) <= set(TRAINED)
    return out, flagged


def shipped_models(cfg, model_dir, tuned_dir, merged: bool, adapter_class: str | None) -> dict:
    """{row: {"model", "revision", "adapter"}}: the model each dense row was scored with. The base rows: the
    base model (with its revision); `finetuned`: the model as trained (finetuned_model/ beside a kept merge;
    for finetune=adapter the base model with the adapter); `merged`: model/; the finetuned hybrid: the run's
    model (the merge when it was kept)."""
    base = {"model": str(cfg.base_model.name_or_path), "revision": cfg.base_model.get("revision"), "adapter": None}
    models = {"base": base, "hybrid_base": base}
    if tuned_dir is None:
        return models
    if adapter_class:
        models["finetuned"] = {**base, "adapter": {"path": str(tuned_dir), "class": adapter_class}}
    else:
        models["finetuned"] = {"model": str(tuned_dir), "revision": None, "adapter": None}
    if merged:
        models["merged"] = {"model": str(model_dir), "revision": None, "adapter": None}
    models["hybrid_finetuned"] = models["merged"] if merged else models["finetuned"]
    return models


def ship_spec(cfg, out: Path, verdict: dict, models: dict, max_seq_length, precision, before: Before, fusions, chunker) -> dict:
    """retriever.json: the verdict's retriever, and under `rows` every row the run scored, each rebuilt by
    `load_retriever(run_dir, documents, row=...)`."""

    def spec_of(row: str) -> dict:
        return retriever_spec(
            {**verdict, "deploy": row},
            run_dir=out,
            models=models,
            prompts={"query": cfg.base_model.query_prompt, "passage": cfg.base_model.passage_prompt},
            max_seq_length=max_seq_length,
            precision=precision,
            bm25=before.bm25.as_dict() if before.bm25 else None,
            fusion=fusions,
            chunker=chunker,
            scores=verdict["scores"],
        )

    spec = spec_of(verdict["deploy"])
    rows = {row: {k: v for k, v in spec_of(row).items() if k != "reason"} for row in verdict["scores"]}
    write_spec(out, {**spec, "rows": rows})
    return spec


def data_hashes(pairs, dev: EvalSet | None, eval_set: EvalSet) -> dict:
    digest = lambda obj: hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()  # noqa: E731
    hashes = {"eval_set": eval_set.digest()}
    if pairs is not None:
        hashes["train_pairs"] = digest(pairs.model_dump())
    if dev is not None:
        hashes["dev_set"] = dev.digest()
    return hashes
