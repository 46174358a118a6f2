"""The runner: the one place that knows the order of the stages.

    load -> chunk -> split -> generate -> finetune -> evaluate (base and finetuned) -> report

Every stage is a plain function in its own module; this file wires their inputs and outputs,
times them, and writes everything into the job's output directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner.stages.chunk.chunking import ChunkPlan, chunk_corpus, chunks_from_json, chunks_to_json, plan_chunks
from runner.infra.devices import share_machine
from runner.infra.errors import RagtuneError
from runner.data.eval_set import EvalSet, eval_set_from_json, eval_set_to_json
from runner.stages.evaluate.eval_sets import held_out_eval_set, read_eval_set
from runner.stages.evaluate.scoring import (
    EvalResult,
    build_index,
    evaluate_with_engine,
    index_from_json,
    index_to_json,
    result_from_json,
    result_to_json,
)
from runner.infra.fingerprint import model_fingerprint, short_identity
from runner.stages.generate.generators import generate_pairs
from runner.stages.ship.retriever import add_model_card, model_card, settings, settings_text
from runner.stages.ship.steps import (
    base_weights,
    before_training,
    data_hashes,
    merge_on_dev,
    score_guards,
    ship_spec,
    shippable_rows,
)
from runner.stages.ship.verdict import decide
from runner.stages.load.corpus import documents_from_json, documents_to_json, load_corpus
from runner.infra.models import hardware, load_model, resolve_device, resolve_precision, share_over_max_length
from runner.data.pairs import EmbeddingQAFinetuneDataset, dataset_from_json, dataset_to_json, write_qa_dataset
from runner.stages.evaluate.retrievers import depth
from runner.report.results import (
    choices_summary,
    compare_metrics,
    flatten,
    metric_value,
    metrics_table,
    shipping_table,
    versions,
    wandb_metrics,
    write_per_query,
    write_results,
)
from runner.infra.secrets import load_secrets_file, protect_logs, redact, reveal
from runner.stages.evaluate.seq_length import choose_max_seq_length, position_limit
from runner.stages.split.splitting import carve_dev_pairs, split_chunks, splits_from_json, splits_to_json
from runner.infra.stage_cache import StageCache
from runner.checks import validate

log = logging.getLogger("ragtune")
TRUNCATION_WARN = 0.05


@contextmanager
def stage(name: str, timings: dict):
    log.info("[%s] ...", name)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    log.info("[%s] done in %.1fs", name, timings[name])


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
                f"base_model.max_seq_length=auto {verdict} {model.max_seq_length} on the dev split "
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


def run(cfg: DictConfig) -> float | None:
    """Run one experiment; return the value of `cfg.optimized_metric` (what sweepers maximise)."""
    load_secrets_file(cfg.secrets_file)  # API keys: the environment, or the file the user names
    reveal()
    protect_logs()
    validate(cfg)
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = redact(OmegaConf.to_container(cfg, resolve=True))
    if cfg.resume:
        done = finished_result(out / "results.json", config)
        if done is not None:
            log.info("[resume] %s already holds the results of this config: skipped", out)
            return metric_value(done["metrics"], cfg.optimized_metric)
    share = share_machine(job_number())
    tracker = instantiate(cfg.logger)
    name, group = run_identity(cfg, out)
    tracker.start(
        flatten(config), out, name=name, group=group, state_dir=Path(cfg.paths.root) / ".wandb", objective=cfg.optimized_metric
    )
    timings: dict[str, float] = {}
    exit_code = 1
    try:
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        with stage("load_model", timings):  # first: a model that cannot be loaded fails at once
            model = load_model(cfg.base_model, device)
        train_finetune = bool(cfg.finetune.get("_target_"))
        counts: dict[str, int] = {}

        stages = StageCache(cfg.cache.dir, cfg.cache.enabled)
        chunking = chunk_plan(cfg, model)
        pairs, dev_set, eval_set = prepare_data(cfg, stages, train_finetune, counts, chunking)
        describe_data(out, pairs, dev_set, eval_set, counts)
        metric = cfg.optimized_metric.split("/", 1)[1]
        length_choice, base_dev = choose_length(cfg, model, pairs, dev_set, device, precision, metric, stages)
        truncation = truncation_report(model, pairs, eval_set, length_choice)
        cache = stages.status
        base = evaluate_base(cfg, model, eval_set, device, precision, stages)
        timings.update(stages.timings)
        with stage("baselines_dev", timings):  # BM25's settings, the base model's dev and eval rankings
            keys = base_keys(cfg, model, eval_set, device, precision, stages)
            before = before_training(
                cfg,
                model,
                keys["model_id"],
                base,
                lambda: base_index(cfg, model, eval_set, keys, precision, stages),
                dev_set,
                eval_set,
                metric,
                precision,
                lambda guard: evaluate_base(cfg, model, guard, device, precision, stages, record=False),
                base_dev,
            )
        chunk_choice = {"chunk_size": chunking.record} if chunks_corpus(cfg, train_finetune) else {}
        model_dir, tuned, merged, run_dev, choices = (None, None, None, None, {**chunk_choice, **length_choice, **before.records})
        base_state = base_weights(cfg, model, dev_set)
        if train_finetune:
            with stage("finetune", timings):  # within finetune.time_budget_s; the best epoch on dev
                train, trained = instantiate(cfg.finetune), {}
                model_dir, tuned_model = train(
                    model=model,
                    pairs=pairs,
                    output_dir=out,
                    device=device,
                    on_log=tracker.log,
                    **finetune_overrides(cfg, dev_set, metric, precision, trained),
                )
                tuned_dev = trained.pop("dev_ranking", None)
                choices.update(trained)
            with stage("merge", timings):  # WiSE-FT on the dev split; a merge that wins becomes model/
                merged_model, choices["merge"], run_dev = merge_on_dev(
                    cfg, base_state, tuned_model, before, dev_set, metric, precision, model_dir, tuned_dev
                )
                run_dev = run_dev if run_dev is not None else tuned_dev
            tracker.log_model(model_dir)
            with stage("evaluate_finetuned", timings):
                tuned_dir = out / "finetuned_model" if merged_model is not None else model_dir
                tuned = evaluate_with_engine(
                    tuned_model,
                    eval_set,
                    cfg.evaluate,
                    model_path=str(tuned_dir),
                    precision=precision,
                    model_id=short_identity(str(tuned_dir), model_fingerprint(str(tuned_dir))),
                    device=device,
                    base_model_cfg=cfg.base_model,
                )
                if merged_model is not None:
                    merged = evaluate_with_engine(
                        merged_model,
                        eval_set,
                        cfg.evaluate,
                        model_path=str(model_dir),
                        precision=precision,
                        model_id=short_identity(str(model_dir), model_fingerprint(str(model_dir))),
                        device=device,
                        base_model_cfg=cfg.base_model,
                    )
            run_model, run_result = (merged_model, merged) if merged_model is not None else (tuned_model, tuned)
        with stage("baselines", timings):  # BM25 and the hybrids on the eval set, their fusion chosen on dev
            rows, fusions = shippable_rows(
                cfg,
                before,
                base,
                tuned,
                merged,
                run_model if train_finetune else None,
                run_result if train_finetune else None,
                dev_set,
                eval_set,
                metric,
                precision,
                choices,
                run_dev,
            )
        with stage("guards", timings):
            guards, flagged = score_guards(
                cfg,
                before,
                run_model if train_finetune else None,
                tuned_model if train_finetune else None,
                merged is not None,
                precision,
                metric,
            )
        with stage("statistics", timings):  # BCa intervals, randomization p-values, the verdict
            metrics = compare_metrics(base, tuned, cfg.evaluate.bootstrap, cfg.seed)
            verdict = decide(
                {r: res.per_query[metric] for r, res in rows.items()}, metric, cfg.evaluate.bootstrap, cfg.seed, flagged
            )
        timings.update(stages.timings)
        metrics.update({r: res.metrics for r, res in rows.items() if r not in ("base", "finetuned")})
        metrics["vs_verdict"] = verdict.pop("vs_deploy")
        spec = ship_spec(cfg, out, verdict, model_dir, model, before, fusions, chunking.config)
        verdict["settings"] = settings(spec)
        if model_dir:
            add_model_card(
                model_dir,
                model_card(
                    {**verdict, "vs_deploy": metrics["vs_verdict"]},
                    metric,
                    config=config,
                    hashes=data_hashes(pairs, dev_set, eval_set),
                    choices=choices,
                ),
            )
        columns, table_rows = write_per_query(out / "per_query.csv", eval_set, rows)
        tracker.table("per_query", columns, table_rows)
        if choices.get("merge", {}).get("curve"):  # WiSE-FT: dev score against the finetuned model's share
            tracker.table(
                "merge_curve", ["alpha", f"dev {metric}"], [[float(a), v] for a, v in choices["merge"]["curve"].items()]
            )
        results = {
            "metrics": metrics,
            "verdict": verdict,
            "choices": choices,
            "guards": guards,
            "retriever": spec,
            "config": config,
            "timings_s": timings,
            "cache": cache,
            "counts": counts,
            "truncation": truncation,
            "device": device,
            "precision": precision,
            "machine_share": share,
            "model_dir": str(model_dir) if model_dir else None,
            "run_dir": str(out),
            "versions": versions(),
        }
        results["throughput"] = throughput(counts, timings, cfg, choices)
        if device.startswith("cuda"):
            import torch

            results["gpu"] = {
                "name": torch.cuda.get_device_name(device),
                "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
            }
        write_results(out / "results.json", results)
        value = metric_value(metrics, cfg.optimized_metric)
        tracker.summary(
            {
                **wandb_metrics(metrics),
                "objective": value,
                "verdict/deploy": verdict["deploy"],
                "verdict/reason": verdict["reason"],
                "verdict/settings": settings_text(spec),
                **flatten(choices_summary(choices), "choices/"),
                **{f"timings_s/{k}": v for k, v in timings.items()},
                **{f"cache/{k}": v for k, v in cache.items()},
                **{f"counts/{k}": v for k, v in counts.items()},
            }
        )
        log.info("\n%s", metrics_table(metrics))
        log.info("\n%s", shipping_table(metrics, verdict))
        log.info("verdict: deploy %s (%s). %s", verdict["deploy"], settings_text(spec), verdict["reason"])
        log.info("results: %s", out / "results.json")
        log.info("retriever: ragtune.load_retriever(%r, documents) rebuilds it in LlamaIndex", str(out))
        if model_dir:
            log.info('model:   %s  (LlamaIndex: Settings.embed_model = "local:%s")', model_dir, model_dir)
        exit_code = 0
        return value
    finally:
        tracker.finish(exit_code)


def reads_pairs_from_file(cfg: DictConfig) -> bool:
    """qa_generator=file: the pairs are read, not generated from the chunks (no generate stage, no cache)."""
    return "path" in cfg.qa_generator


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
    from runner.stages.finetune.trainer import resolve_hard_negatives

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


def throughput(counts: dict, timings: dict, cfg, choices: dict | None = None) -> dict:
    """Training pairs per second (all epochs) and eval texts (corpus + queries) encoded per second."""
    out = {}
    ft = cfg.finetune
    trained = (choices or {}).get("time_budget", {}).get("chosen")
    seen = (
        trained["steps"] * ft.batch_size
        if trained
        else ft.max_steps * ft.batch_size
        if ft.get("max_steps", -1) > 0
        else counts.get("train_pairs", 0) * float(ft.get("epochs") or 0)
        if ft.get("epochs") != "auto"
        else 0
    )
    if timings.get("finetune") and seen:
        out["train_pairs_per_s"] = round(seen / timings["finetune"], 2)
    texts = counts.get("eval_corpus", 0) + counts.get("eval_queries", 0)
    if timings.get("evaluate_finetuned") and texts:
        out["encode_texts_per_s"] = round(texts / timings["evaluate_finetuned"], 1)
    return out


def eval_generator_cfg(cfg: DictConfig):
    """The generator of held-out questions: eval_set.generator (held_out_ict: one yardstick for every
    training generator), else the training generator."""
    own = cfg.eval_set.get("generator")
    return own if own is not None else cfg.qa_generator


def chunk_plan(cfg: DictConfig, model=None) -> ChunkPlan:
    """The chunker as the chunk stage builds it (chunk_size: auto sized to the base model's window; the
    model is loaded when not given)."""
    if cfg.chunker.get("chunk_size") != "auto" and not cfg.chunker.get("fit_window"):
        return plan_chunks(cfg.chunker, None, "")
    model = model if model is not None else load_model(cfg.base_model, "cpu")
    name, revision = model._ragtune_path, cfg.base_model.get("revision")
    return plan_chunks(cfg.chunker, model, short_identity(name, model_fingerprint(name, revision)), revision)


def chunks_corpus(cfg: DictConfig, train_finetune: bool) -> bool:
    """Whether the run chunks the corpus itself: it generates pairs, or carves dev or eval questions from it."""
    generates = train_finetune and not reads_pairs_from_file(cfg)
    return generates or dev_from_chunks(cfg) or cfg.eval_set.kind == "held_out"


def data_keys(
    cfg: DictConfig, stages: StageCache, train_finetune: bool = True, chunking: ChunkPlan | None = None
) -> dict[str, str]:
    """The keys of load, chunk, split, generate and eval_set, derived before any work: each from its
    config slice, its upstream keys, the content of the files the slice names and its code."""
    plain = functools.partial(OmegaConf.to_container, resolve=True)
    held_out = cfg.eval_set.kind == "held_out"
    chunking = chunking or chunk_plan(cfg)
    keys = {"load": stages.key("load", plain(cfg.corpus), [], (load_corpus, documents_to_json, documents_from_json))}
    keys["chunk"] = stages.key(
        "chunk", chunking.config, [keys["load"]], (chunk_corpus, plan_chunks, chunks_to_json, chunks_from_json)
    )
    keys["split"] = stages.key("split", split_settings(cfg), [keys["chunk"]], (split_chunks, splits_to_json, splits_from_json))
    if train_finetune and not reads_pairs_from_file(cfg):
        keys["generate"] = stages.key(
            "generate", plain(cfg.qa_generator), [keys["split"]], (generate_pairs, dataset_to_json, dataset_from_json)
        )
    for stage, wanted in (("dev_set", dev_from_chunks(cfg)), ("eval_set", held_out)):
        if wanted:  # questions from held-out documents, by the eval set's generator
            keys[stage] = stages.key(
                stage, plain(eval_generator_cfg(cfg)), [keys["split"]], (held_out_eval_set, eval_set_to_json, eval_set_from_json)
            )
    return keys


def dev_from_chunks(cfg: DictConfig) -> bool:
    """The dev split is carved from the corpus's documents (not from pairs read from a file, not a dev file)."""
    return cfg.dev.path is None and cfg.dev.fraction > 0 and not reads_pairs_from_file(cfg)


def split_settings(cfg: DictConfig) -> dict:
    return {
        **OmegaConf.to_container(cfg.split, resolve=True),
        "held_out": cfg.eval_set.kind == "held_out",
        "dev_fraction": cfg.dev.fraction if dev_from_chunks(cfg) else 0.0,
        "dev_seed": cfg.dev.seed,
    }


def prepare_data(
    cfg: DictConfig, stages: StageCache, train_finetune: bool, counts: dict, chunking: ChunkPlan | None = None
) -> tuple:
    """load -> chunk -> split -> generate (and the dev and held-out eval sets), each through the stage
    cache; returns (train pairs, dev set or None, eval set) and adds each computed stage's counts to `counts`.

    The keys are known before any work, so when the generate and eval_set entries hit, nothing
    upstream is loaded at all.
    """
    chunking = chunking or chunk_plan(cfg)
    keys = data_keys(cfg, stages, train_finetune, chunking)

    def loaded():
        return stages.run(
            "load", keys["load"], functools.partial(load_corpus, cfg.corpus), documents_to_json, documents_from_json
        )

    def chunked():
        return stages.run(
            "chunk",
            keys["chunk"],
            functools.partial(chunk_corpus, plan=chunking),
            chunks_to_json,
            chunks_from_json,
            needs=(loaded,),
        )

    @functools.cache
    def split() -> dict:
        settings = split_settings(cfg)
        parts = stages.run(
            "split",
            keys["split"],
            functools.partial(
                split_chunks,
                val_fraction=settings["val_fraction"],
                seed=settings["seed"],
                held_out=settings["held_out"],
                dev_fraction=settings["dev_fraction"],
                dev_seed=settings["dev_seed"],
            ),
            splits_to_json,
            splits_from_json,
            needs=(chunked,),
        )
        counts.update(parts["counts"])
        return parts

    reports: dict[str, dict] = {"generate": {}, "dev_set": {}, "eval_set": {}}
    pairs, dev_set = None, None
    if reads_pairs_from_file(cfg) and (train_finetune or (cfg.dev.path is None and cfg.dev.fraction > 0)):
        pairs = instantiate(cfg.qa_generator)(None)
        if cfg.dev.path is None and cfg.dev.fraction > 0:
            pairs, dev_set = carve_dev_pairs(pairs, cfg.dev.fraction, cfg.dev.seed)
        pairs = pairs if train_finetune else None
    elif train_finetune:
        pairs = stages.run(
            "generate",
            keys["generate"],
            functools.partial(generate_pairs, generator=instantiate(cfg.qa_generator), report=reports["generate"]),
            dataset_to_json,
            dataset_from_json,
            needs=(lambda: split()["train"],),
            keep=lambda: not reports["generate"].get("failed_chunks"),
        )
    sets = {}
    for stage, part in (("dev_set", "dev"), ("eval_set", "held_out")):
        if stage in keys:
            sets[stage] = stages.run(
                stage,
                keys[stage],
                functools.partial(held_out_eval_set, generator=instantiate(eval_generator_cfg(cfg)), report=reports[stage]),
                eval_set_to_json,
                eval_set_from_json,
                needs=(lambda part=part: split()[part],),
                keep=lambda stage=stage: not reports[stage].get("failed_chunks"),
            )
    eval_set = sets.get("eval_set") or read_eval_set(cfg.eval_set, counts)
    if cfg.dev.path is not None:
        dev_set = read_eval_set(OmegaConf.create({"kind": "file", "path": cfg.dev.path}), counts, key="dev.path")
    dev_set = sets.get("dev_set", dev_set)
    if dev_set is not None and not dev_set.answered_query_ids():
        log.warning(
            "the dev split has no question with a relevant document; the run's choices keep their "
            "defaults. Raise dev.fraction or name a dev file (dev.path=DEV.json)."
        )
        dev_set = None
    for name, report in reports.items():  # e.g. generate_failed_chunks: LLM chunks skipped after retries
        counts.update({f"{name}_{k}": v for k, v in report.items()})
    return pairs, dev_set, eval_set


def job_number() -> int:
    from hydra.core.hydra_config import HydraConfig

    return int(HydraConfig.get().job.get("num") or 0) if HydraConfig.initialized() else 0


def finished_result(path: Path, config: dict) -> dict | None:
    """results.json of an earlier run of the same resolved config (resume and logger aside), if any."""
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    same = lambda c: {k: v for k, v in c.items() if k not in ("resume", "logger")}  # noqa: E731
    return done if same(done.get("config", {})) == same(config) else None


def run_identity(cfg: DictConfig, out: Path) -> tuple[str, str]:
    """(run name, group) for the tracker: in a sweep, the job's own overrides, grouped by sweep;
    otherwise the run directory's name, grouped by experiment name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return out.name, cfg.name
    hc = HydraConfig.get()
    sweep = Path(hc.sweep.dir)
    short = []  # finetune.learning_rate=1e-05 -> learning_rate=1e-05
    for o in hc.overrides.task:
        key, _, value = o.partition("=")
        if not key.lstrip("+~").startswith(("logger.", "hydra.", "paths.")):
            short.append(f"{key.split('.')[-1]}={value}")
    name = ",".join(short)[:120] or out.name
    return f"{hc.job.num}:{name}", f"sweep-{sweep.parent.name}_{sweep.name}"


def choose_length(
    cfg, model, pairs, dev: EvalSet | None, device: str, precision: str, metric: str, stages: StageCache
) -> tuple[dict, object]:
    """`base_model.max_seq_length=auto`: the length chosen on the dev split from the training side's
    passages (a cached stage), set on the model and in `cfg`, so every later key holds the number.
    Returns ({"max_seq_length": the record} or {} when the config gives a number, the base model's dev
    ranking at the chosen length when the choice encoded it)."""
    if cfg.base_model.max_seq_length != "auto":
        return {}, None
    passages = set(dev.corpus.values()) if dev is not None else set()
    passages = sorted(passages | (set(pairs.corpus.values()) if pairs is not None else set()))
    name = str(cfg.base_model.name_or_path)
    fingerprint = model_fingerprint(name, cfg.base_model.get("revision"))
    k = depth(cfg)  # the ranking's depth: the winner's is the base model's dev ranking the hybrids choose on
    settings = {
        "base_model": OmegaConf.to_container(cfg.base_model, resolve=True),
        "model": fingerprint,
        "k": k,
        "precision": precision,
        "device": device,
        "hardware": hardware(device),
        "batch_size": cfg.evaluate.batch_size,
        "metric": metric,
        "bootstrap": cfg.evaluate.bootstrap,
        "seed": cfg.seed,
        "dev": dev.digest() if dev is not None else None,
        "passages": hashlib.sha256(json.dumps(passages).encode()).hexdigest(),
    }
    key = stages.key("max_seq_length", settings, [], (choose_max_seq_length, load_model))
    record, ranking = stages.run(
        "max_seq_length",
        key,
        functools.partial(
            choose_max_seq_length,
            model,
            short_identity(name, fingerprint),
            dev,
            passages,
            metric,
            k,
            cfg.evaluate.batch_size,
            precision,
            cfg.evaluate.bootstrap,
            cfg.seed,
        ),
        lambda chosen: chosen[0],
        lambda record: (record, None),
    )
    model.max_seq_length = record["chosen"]
    cfg.base_model.max_seq_length = record["chosen"]
    log.info("max_seq_length: %s", record["reason"])
    return {"max_seq_length": record}, ranking


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
    evaluate = {k: v for k, v in OmegaConf.to_container(cfg.evaluate, resolve=True).items() if k != "baselines"}
    settings = {**encoder, "eval_set": eval_set.digest(), "evaluate": evaluate}  # baselines: not this stage's
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


def describe_data(out: Path, pairs, dev_set: EvalSet | None, eval_set: EvalSet, counts: dict) -> None:
    """The data files of the run dir, and their counts; an eval set with nothing to score stops here."""
    if pairs is not None:
        write_qa_dataset(pairs, out / "train_pairs.json")
        counts["train_pairs"] = sum(len(v) for v in pairs.relevant_docs.values())
    if dev_set is not None:
        write_qa_dataset(_as_dataset(dev_set), out / "dev_set.json")
        counts["dev_queries"], counts["dev_corpus"] = len(dev_set.answered_query_ids()), len(dev_set.corpus)
    write_qa_dataset(_as_dataset(eval_set), out / "eval_set.json")
    counts["eval_queries"] = len(eval_set.answered_query_ids())
    counts["eval_queries_dropped"] = len(eval_set.queries) - counts["eval_queries"]  # no relevant doc
    if counts["eval_queries_dropped"]:
        log.warning(
            "eval set: %d queries have no relevant document and are left out of the metrics", counts["eval_queries_dropped"]
        )
    counts["eval_corpus"] = len(eval_set.corpus)
    if not counts["eval_queries"]:
        raise RagtuneError(
            "the eval set has no query with a relevant document; give more "
            "held-out documents (split.val_fraction) or another eval_set."
        )
    log.info("counts: %s", counts)


def _as_dataset(eval_set: EvalSet):
    return EmbeddingQAFinetuneDataset(queries=eval_set.queries, corpus=eval_set.corpus, relevant_docs=eval_set.relevant_docs)
