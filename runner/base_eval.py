"""The base model's side of a run: the choices made before training on every training-side question (its
`max_seq_length: auto`, BM25's settings, the base hybrid's fusion), the truncation report, and its evaluation
on the eval set (the cached `base_embeddings` and `evaluate_base` stages, which every
job of a finetune sweep after the first reads).
"""

from __future__ import annotations

import functools
import logging

from omegaconf import OmegaConf

from runner.data.eval_set import EvalSet
from runner.finetune_setup import window_cost
from runner.infra.fingerprint import model_fingerprint, short_identity
from runner.infra.models import hardware, load_model, share_over_max_length
from runner.infra.stage_cache import StageCache
from runner.stages.evaluate.before_training import choose_before_training
from runner.stages.evaluate.before_training import from_json as before_from_json
from runner.stages.evaluate.before_training import to_json as before_to_json
from runner.stages.evaluate.engines import evaluate_with_engine
from runner.stages.evaluate.eval_sets import training_side
from runner.stages.evaluate.retrievers import depth
from runner.stages.evaluate.scoring import (
    EvalResult,
    build_index,
    index_from_json,
    index_to_json,
    result_from_json,
    result_to_json,
)
from runner.stages.evaluate.seq_length import position_limit
from runner.stages.finetune.trainer import training_cost

log = logging.getLogger("ragtune")
TRUNCATION_WARN = 0.05


def truncation_report(model, pairs, eval_set: EvalSet, length_choice: dict) -> dict:
    """Share of passages and queries longer than the model's max_seq_length (truncation is silent)."""
    passages = list(eval_set.corpus.values()) + (list(pairs.corpus.values()) if pairs else [])
    queries = list(eval_set.queries.values()) + (list(pairs.queries.values()) if pairs else [])
    report = {
        "max_seq_length": model.max_seq_length,
        "passages_over": share_over_max_length(model, passages),
        "queries_over": share_over_max_length(model, queries),
    }
    if max(report["passages_over"], report["queries_over"]) > TRUNCATION_WARN:
        positions = position_limit(model)
        chosen = length_choice.get("max_seq_length", {})
        if len(chosen.get("candidates", ())) > 1:
            verdict = "kept the model's own" if chosen["chosen"] == chosen["own"] else "chose"
            advice = (
                f"base_model.max_seq_length=auto {verdict} {model.max_seq_length} on the training side's questions "
                "(choices.max_seq_length); a number overrides it, or chunker.fit_window=true where ragtune chunks"
            )
        elif positions > model.max_seq_length:
            advice = (
                f"raise base_model.max_seq_length (this model has {positions} positions), or chunker.fit_window=true "
                "where ragtune chunks"
            )
        else:
            advice = "chunker.fit_window=true where ragtune chunks, or shorter passages (the model has no more positions)"
        log.warning(
            "%.0f%% of passages and %.0f%% of queries are longer than max_seq_length=%d and get cut: %s.",
            100 * report["passages_over"],
            100 * report["queries_over"],
            model.max_seq_length,
            advice,
        )
    return report


def choose_before(cfg, model, pairs, dev: EvalSet | None, device: str, precision: str, metric: str, stages: StageCache):
    """The choices made before training (runner/stages/evaluate/before_training.py), a cached stage, on every
    training-side question: the window (`max_seq_length: auto`, set on the model and in `cfg`, so every later
    key holds the number), BM25's settings and the base hybrid's fusion. Returns a `BeforeTraining`."""
    side = training_side(pairs, dev)
    window = cfg.base_model.max_seq_length == "auto"
    cost, cost_settings = window_cost(cfg, model, pairs, device) if window else (None, None)
    name = str(cfg.base_model.name_or_path)
    fingerprint = model_fingerprint(name, cfg.base_model.get("revision"))
    k = depth(cfg)
    settings = {
        "base_model": OmegaConf.to_container(cfg.base_model, resolve=True),
        "model": fingerprint,
        "max_seq_length": None if window else model.max_seq_length,
        "baselines": OmegaConf.to_container(cfg.evaluate.baselines, resolve=True),
        "k": k,
        "precision": precision,
        "device": device,
        "hardware": hardware(device),
        "batch_size": cfg.evaluate.batch_size,
        "metric": metric,
        "bootstrap": cfg.evaluate.bootstrap,
        "seed": cfg.seed,
        "side": side.digest() if side is not None else None,
        "dev": dev.digest() if dev is not None else None,
        "training_cost": cost_settings,  # what training would cost at each window (with the hardware above)
    }
    code = (choose_before_training, before_to_json, before_from_json, load_model) + ((training_cost,) if cost else ())
    key = stages.key("choices_before_training", settings, [], code)
    before = stages.run(
        "choices_before_training",
        key,
        functools.partial(
            choose_before_training,
            model,
            short_identity(name, fingerprint),
            side,
            dev,
            window=window,
            baselines=cfg.evaluate.baselines,
            metric=metric,
            k=k,
            batch_size=cfg.evaluate.batch_size,
            precision=precision,
            n_resamples=cfg.evaluate.bootstrap,
            seed=cfg.seed,
            training_cost=cost,
        ),
        before_to_json,
        before_from_json,
    )
    if window:
        model.max_seq_length = before.max_seq_length
        cfg.base_model.max_seq_length = before.max_seq_length
    for name, record in before.records.items():
        log.info("%s: %s", name, record["reason"])
    return before


def base_keys(cfg, model, eval_set: EvalSet, device: str, precision: str, stages: StageCache) -> dict:
    """The keys of the base model's corpus embeddings and of its evaluation, and the model's identity:
    the base model config, every file of the model (or its hub snapshot), the eval set's content,
    the device, the precision and the evaluation settings. The code includes `load_model`, which
    built the model object: its encode is sentence-transformers' code, at that library's version."""
    name = str(cfg.base_model.name_or_path)
    fingerprint = model_fingerprint(name, cfg.base_model.get("revision"))
    encoder = {
        "base_model": OmegaConf.to_container(cfg.base_model, resolve=True),
        "model": fingerprint,
        "max_seq_length": model.max_seq_length,
        "precision": precision,
        "device": device,
        "hardware": hardware(device),
        "batch_size": cfg.evaluate.batch_size,
    }
    keys = {"model_id": short_identity(name, fingerprint)}
    if cfg.evaluate.engine == "fast":
        keys["base_embeddings"] = stages.key(
            "base_embeddings",
            {**encoder, "corpus": eval_set.corpus_digest()},
            [],
            (build_index, index_to_json, index_from_json, load_model),
        )
    # baselines: not this stage's; bootstrap: the intervals are computed later, from the per-query values it stores
    evaluate = {
        k: v for k, v in OmegaConf.to_container(cfg.evaluate, resolve=True).items() if k not in ("baselines", "bootstrap")
    }
    settings = {**encoder, "eval_set": eval_set.digest(), "evaluate": evaluate}
    keys["evaluate_base"] = stages.key(
        "evaluate_base",
        settings,
        [keys.get("base_embeddings", "")],
        (evaluate_with_engine, result_to_json, result_from_json, load_model),
    )
    return keys


def evaluate_base(
    cfg, model, eval_set: EvalSet, device: str, precision: str, stages: StageCache, record: bool = True
) -> EvalResult:
    """The base model's evaluation, from the stage cache when an earlier run made it.

    It depends only on the base model, the eval set and the evaluation settings, so every job of a
    finetune sweep after the first reads it; on a miss, the corpus embeddings may still come from
    the `base_embeddings` stage (another metric cut-off, say).
    """
    keys = base_keys(cfg, model, eval_set, device, precision, stages)
    fast = "base_embeddings" in keys
    cache = stages if record else StageCache(stages.root, stages.enabled)  # a guard's: not the run's status

    def index():
        return cache.run(
            "base_embeddings",
            keys["base_embeddings"],
            functools.partial(build_index, model, keys["model_id"], eval_set.corpus, cfg.evaluate.batch_size, precision),
            index_to_json,
            index_from_json,
        )

    return cache.run(
        "evaluate_base",
        keys["evaluate_base"],
        functools.partial(
            evaluate_with_engine,
            model,
            eval_set,
            cfg.evaluate,
            model_path=str(cfg.base_model.name_or_path),
            model_id=keys["model_id"],
            precision=precision,
            device=device,
            base_model_cfg=cfg.base_model,
        ),
        result_to_json,
        result_from_json,
        needs=(index,) if fast else (),
    )


def base_index(cfg, model, eval_set: EvalSet, keys: dict, precision: str, stages: StageCache):
    """The base model's embeddings of the eval corpus: the cached stage (a hit after evaluate_base)."""
    build = functools.partial(build_index, model, keys["model_id"], eval_set.corpus, cfg.evaluate.batch_size, precision)
    if "base_embeddings" not in keys:  # evaluate.engine=llama_index: no such stage
        return build()
    return stages.run("base_embeddings", keys["base_embeddings"], build, index_to_json, index_from_json)
