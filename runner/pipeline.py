"""The runner: the one place that knows the order of the stages.

    load -> chunk -> split -> generate -> finetune -> evaluate (base and finetuned) -> report

Every stage is a plain function in its own module; this file wires their inputs and outputs,
times them, and writes everything into the job's output directory.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner.devices import share_machine
from runner.chunk import chunk_documents, drop_duplicate_chunks, nodes_from_json, nodes_to_json
from runner.chunkers import fill_tiktoken_cache
from runner.beir import read_beir
from runner.embedding_cache import cache_key, cached_index, model_identity
from runner.errors import RagtuneError
from runner.evaluate import EvalResult, EvalSet, build_index, evaluate_model
from runner.models import load_model, resolve_device, resolve_precision, share_over_max_length
from runner.load import documents_from_json, documents_to_json
from runner.qa_file import EmbeddingQAFinetuneDataset, read_qa_dataset, write_qa_dataset
from runner.report import (compare_metrics, flatten, metric_value, metrics_table, redact, versions, wandb_metrics,
                           write_per_query, write_results)
from runner.secrets import load_secrets_file, protect_logs, reveal
from runner.split import split_by_document
from runner.stage_cache import StageCache
from runner.validate import validate

log = logging.getLogger("ragtune")
TRUNCATION_WARN = 0.05


@contextmanager
def stage(name: str, timings: dict):
    log.info("[%s] ...", name)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    log.info("[%s] done in %.1fs", name, timings[name])


def held_out_eval_set(generator, held_out_nodes) -> EvalSet:
    """Questions from held-out chunks, retrieved against every held-out chunk (the others are distractors)."""
    ds = generator(held_out_nodes)
    corpus = {n.node_id: ds.corpus.get(n.node_id, n.get_content()) for n in held_out_nodes}
    return EvalSet(dict(ds.queries), corpus, dict(ds.relevant_docs))


def truncation_report(model, pairs, eval_set: EvalSet) -> dict:
    """Share of passages and queries longer than the model's max_seq_length (truncation is silent)."""
    passages = list(eval_set.corpus.values()) + (list(pairs.corpus.values()) if pairs else [])
    queries = list(eval_set.queries.values()) + (list(pairs.queries.values()) if pairs else [])
    report = {
        "max_seq_length": model.max_seq_length,
        "passages_over": share_over_max_length(model, passages),
        "queries_over": share_over_max_length(model, queries),
    }
    if max(report["passages_over"], report["queries_over"]) > TRUNCATION_WARN:
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        positions = getattr(config, "max_position_embeddings", None)
        advice = (f"raise base_model.max_seq_length (this model has {positions} positions) or lower chunker.chunk_size"
                  if positions and positions > model.max_seq_length
                  else "lower chunker.chunk_size (the model has no more positions)")
        log.warning("%.0f%% of passages and %.0f%% of queries are longer than max_seq_length=%d and get cut: %s.",
                    100 * report["passages_over"], 100 * report["queries_over"], model.max_seq_length, advice)
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
    tracker.start(flatten(config), out, name=name, group=group, state_dir=Path(cfg.paths.root) / ".wandb",
                  objective=cfg.optimized_metric)
    timings: dict[str, float] = {}
    exit_code = 1
    try:
        device = resolve_device(cfg.device)
        precision = resolve_precision(cfg.precision, device)
        with stage("load_model", timings):  # first: a model that cannot be loaded fails at once
            model = load_model(cfg.base_model, device)
        train_finetune = bool(cfg.finetune.get("_target_"))
        generator = instantiate(cfg.qa_generator)
        counts: dict[str, int] = {}

        stages = StageCache(cfg.cache.dir, cfg.cache.enabled)
        pairs, eval_set = prepare_data(cfg, stages, generator, train_finetune, counts, timings)
        if pairs is not None:
            write_qa_dataset(pairs, out / "train_pairs.json")
            counts["train_pairs"] = sum(len(v) for v in pairs.relevant_docs.values())
        write_qa_dataset(_as_dataset(eval_set), out / "eval_set.json")
        counts["eval_queries"] = len(eval_set.answered_query_ids())
        counts["eval_queries_dropped"] = len(eval_set.queries) - counts["eval_queries"]  # no relevant doc
        if counts["eval_queries_dropped"]:
            log.warning("eval set: %d queries have no relevant document and are left out of the metrics",
                        counts["eval_queries_dropped"])
        counts["eval_corpus"] = len(eval_set.corpus)
        if not counts["eval_queries"]:
            raise RagtuneError("the eval set has no query with a relevant document; give more "
                               "held-out documents (split.val_fraction) or another eval_set.")
        log.info("counts: %s", counts)

        truncation = truncation_report(model, pairs, eval_set)
        cache = stages.status
        with stage("evaluate_base", timings):
            base = evaluate_base(cfg, model, eval_set, device, precision, stages)
        model_dir, tuned = None, None
        if train_finetune:
            with stage("finetune", timings):
                train = instantiate(cfg.finetune)
                model_dir, tuned_model = train(model=model, pairs=pairs, output_dir=out, device=device,
                                               on_log=tracker.log, **finetune_overrides(cfg))
            tracker.log_model(model_dir)
            with stage("evaluate_finetuned", timings):
                tuned = evaluate(cfg, tuned_model, str(model_dir), model_identity(str(model_dir)), eval_set,
                                 device, precision)

        metrics = compare_metrics(base, tuned, cfg.evaluate.bootstrap, cfg.seed)
        columns, rows = write_per_query(out / "per_query.csv", eval_set, base, tuned)
        tracker.table("per_query", columns, rows)
        results = {
            "metrics": metrics, "config": config, "timings_s": timings, "cache": cache, "counts": counts,
            "truncation": truncation, "device": device, "precision": precision, "machine_share": share,
            "model_dir": str(model_dir) if model_dir else None, "run_dir": str(out), "versions": versions(),
        }
        results["throughput"] = throughput(counts, timings, cfg)
        if device.startswith("cuda"):
            import torch

            results["gpu"] = {"name": torch.cuda.get_device_name(device),
                              "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3)}
        write_results(out / "results.json", results)
        value = metric_value(metrics, cfg.optimized_metric)
        tracker.summary({**wandb_metrics(metrics), "objective": value,
                         **{f"timings_s/{k}": v for k, v in timings.items()},
                         **{f"cache/{k}": v for k, v in cache.items()},
                         **{f"counts/{k}": v for k, v in counts.items()}})
        log.info("\n%s", metrics_table(metrics))
        log.info("results: %s", out / "results.json")
        if model_dir:
            log.info("model:   %s  (LlamaIndex: Settings.embed_model = \"local:%s\")", model_dir, model_dir)
        exit_code = 0
        return value
    finally:
        tracker.finish(exit_code)


def reads_pairs_from_file(cfg: DictConfig) -> bool:
    """qa_generator=file: the pairs are read, not generated from the chunks (no generate stage, no cache)."""
    return "path" in cfg.qa_generator


def finetune_overrides(cfg: DictConfig) -> dict:
    """Settings of `cfg.finetune` that depend on the rest of the config: hard_negatives.num=null (auto)."""
    if "hard_negatives" not in cfg.finetune or cfg.finetune.hard_negatives.num is not None:
        return {}
    from runner.finetune import resolve_hard_negatives

    from_file = reads_pairs_from_file(cfg)
    hard = {**OmegaConf.to_container(cfg.finetune.hard_negatives, resolve=True),
            "num": resolve_hard_negatives(None, from_file), "auto": True}
    log.info("finetune: hard_negatives.num auto -> %d (%s)", hard["num"],
             "pairs from a file: one mined negative each" if from_file else "pairs generated in the run: in-batch only")
    return {"hard_negatives": hard}


def throughput(counts: dict, timings: dict, cfg) -> dict:
    """Training pairs per second (all epochs) and eval texts (corpus + queries) encoded per second."""
    out = {}
    ft = cfg.finetune
    seen = ft.max_steps * ft.batch_size if ft.get("max_steps", -1) > 0 else \
        counts.get("train_pairs", 0) * float(ft.get("epochs") or 0)
    if timings.get("finetune") and seen:
        out["train_pairs_per_s"] = round(seen / timings["finetune"], 2)
    texts = counts.get("eval_corpus", 0) + counts.get("eval_queries", 0)
    if timings.get("evaluate_finetuned") and texts:
        out["encode_texts_per_s"] = round(texts / timings["evaluate_finetuned"], 1)
    return out


def prepare_data(cfg: DictConfig, stages: StageCache, generator, train_finetune: bool, counts: dict,
                 timings: dict) -> tuple:
    """load -> chunk -> split -> generate, each through the stage cache; returns (train pairs, eval set).

    Keys depend on config and upstream keys only, so they are known before any work: when the
    generate entries hit, nothing upstream is loaded at all.
    """
    held_out = cfg.eval_set.kind == "held_out"
    slice_ = lambda node: redact(OmegaConf.to_container(node, resolve=True))  # noqa: E731 - no key in a key
    k_load = stages.key("load", slice_(cfg.corpus), [])
    k_chunk = stages.key("chunk", slice_(cfg.chunker), [k_load])
    k_split = stages.key("split", slice_(cfg.split) if held_out else "all", [k_chunk])
    memo: dict = {}

    # each compute function times only its own work: upstream calls come before its `stage`
    def load():
        with stage("load", timings):
            return instantiate(cfg.corpus)

    def chunk():
        loaded = stages.run("load", k_load, load, documents_to_json, documents_from_json)
        with stage("chunk", timings):
            fill_tiktoken_cache()
            kept, dropped = drop_duplicate_chunks(chunk_documents(loaded.documents, instantiate(cfg.chunker)))
        return {"nodes": kept, "dropped": dropped, "documents": len(loaded.documents),
                "skipped_files": len(loaded.skipped)}

    reports: dict[str, dict] = {"generate": {}, "eval_set": {}}

    def generate_pairs():
        train = split()[0]
        with stage("generate", timings):
            return call_generator(generator, train, reports["generate"])

    own = cfg.eval_set.get("generator") if held_out else None  # eval_set=held_out_ict: one yardstick
    eval_gen_cfg = own if own is not None else cfg.qa_generator
    eval_generator = instantiate(own) if own is not None else generator

    def generate_eval_set():
        held = split()[1]
        with stage("eval_set", timings):
            return held_out_eval_set(functools.partial(call_generator, eval_generator, report=reports["eval_set"]),
                                     held)

    def split():
        if "split" not in memo:
            def compute():
                out = stages.run("chunk", k_chunk, chunk,
                                 lambda v: {**v, "nodes": nodes_to_json(v["nodes"])},
                                 lambda d: {**d, "nodes": nodes_from_json(d["nodes"])})
                nodes = out["nodes"]
                with stage("split", timings):
                    parts = split_by_document(nodes, cfg.split.val_fraction, cfg.split.seed) if held_out \
                        else (nodes, [])
                return {"parts": parts, "documents": out["documents"], "dropped": out["dropped"],
                        "skipped_files": out["skipped_files"], "chunks": len(nodes)}
            value = stages.run("split", k_split, compute,
                               lambda v: {**v, "parts": [nodes_to_json(p) for p in v["parts"]]},
                               lambda d: {**d, "parts": tuple(nodes_from_json(p) for p in d["parts"])})
            counts.update(documents=value["documents"], skipped_files=value["skipped_files"],
                          duplicate_chunks_dropped=value["dropped"],
                          chunks=value["chunks"], train_chunks=len(value["parts"][0]),
                          held_out_chunks=len(value["parts"][1]))
            memo["split"] = value["parts"]
        return memo["split"]

    pairs = None
    if train_finetune and reads_pairs_from_file(cfg):
        pairs = generator(None)
    elif train_finetune:
        k_gen = stages.key("generate", slice_(cfg.qa_generator), [k_split])
        pairs = stages.run("generate", k_gen, generate_pairs, lambda v: v.model_dump(),
                           lambda d: EmbeddingQAFinetuneDataset(**d),
                           keep=lambda: not reports["generate"].get("failed_chunks"))
    if held_out:
        k_eval = stages.key("eval_set", slice_(eval_gen_cfg), [k_split])
        eval_set = stages.run("eval_set", k_eval, generate_eval_set, lambda v: v.__dict__,
                              lambda d: EvalSet(**d), keep=lambda: not reports["eval_set"].get("failed_chunks"))
    else:
        eval_set = read_eval_set(cfg.eval_set, counts)
    for name, report in reports.items():  # e.g. generate_failed_chunks: LLM chunks skipped after retries
        counts.update({f"{name}_{k}": v for k, v in report.items()})
    return pairs, eval_set


def call_generator(generator, nodes, report: dict):
    """`generator(nodes)`, handing it `report` for its counts when it takes one (the LLM generator)."""
    func = generator.func if isinstance(generator, functools.partial) else generator
    if "report" in inspect.signature(func).parameters:
        return generator(nodes, report=report)
    return generator(nodes)


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


def read_eval_set(eval_cfg, counts: dict) -> EvalSet:
    if eval_cfg.kind == "beir":
        beir = read_beir(eval_cfg.path, eval_cfg.split)
        counts.update({f"eval_{k}": v for k, v in beir["counts"].items()})
        relevant = {q: [d for d, g in grades.items() if g > 0] for q, grades in beir["grades"].items()}
        return EvalSet(beir["queries"], beir["corpus"], relevant, beir["grades"])
    ds = read_qa_dataset(eval_cfg.path, key="eval_set.path")
    return EvalSet(dict(ds.queries), dict(ds.corpus), dict(ds.relevant_docs))


def evaluate(cfg, model, model_path: str, model_id: str, eval_set: EvalSet, device: str, precision: str,
             index=None):
    """One model on the eval set, by the engine the config names."""
    if cfg.evaluate.engine == "llama_index":
        from runner.evaluate_llama_index import evaluate_with_llama_index

        adapter = getattr(model, "adapter", None)  # finetune=adapter: the base model + the adapter dir
        return evaluate_with_llama_index(
            str(cfg.base_model.name_or_path) if adapter is not None else model_path, eval_set,
            cfg.evaluate.llama_index_top_k, max_length=model.max_seq_length,
            query_prompt=cfg.base_model.query_prompt, passage_prompt=cfg.base_model.passage_prompt,
            device=device, adapter=(model_path, type(adapter)) if adapter is not None else None)
    return evaluate_model(model, eval_set, cfg.evaluate, cfg.evaluate.batch_size, model_id=model_id,
                          index=index, precision=precision)


def evaluate_base(cfg, model, eval_set: EvalSet, device: str, precision: str, stages: StageCache) -> EvalResult:
    """The base model's evaluation, from the stage cache when an earlier run made it.

    It depends only on the base model, the eval set and the evaluation settings, so every job of
    a finetune sweep after the first reads it; on a miss, the corpus embeddings may still come
    from the embedding cache (another metric cut-off, say).
    """
    name = str(cfg.base_model.name_or_path)
    model_id = model_identity(name)
    settings = {"model": model_id, "eval_set": eval_set_hash(eval_set), "precision": precision,
                "max_seq_length": model.max_seq_length,
                "prompts": [cfg.base_model.query_prompt, cfg.base_model.passage_prompt],
                "evaluate": OmegaConf.to_container(cfg.evaluate, resolve=True)}

    def compute() -> EvalResult:
        index = None
        if cfg.cache.enabled and cfg.evaluate.engine == "fast":
            key = cache_key(model_id, eval_set.corpus, max_seq_length=model.max_seq_length,
                            passage_prompt=cfg.base_model.passage_prompt, precision=precision)
            index, hit = cached_index(Path(cfg.cache.dir), key, lambda: build_index(
                model, model_id, eval_set.corpus, cfg.evaluate.batch_size, precision))
            stages.status["base_embeddings"] = "hit" if hit else "miss"
        return evaluate(cfg, model, name, model_id, eval_set, device, precision, index=index)

    return stages.run("evaluate_base", stages.key("evaluate_base", settings, []), compute,
                      lambda r: {**r.__dict__, "per_query": {k: v.tolist() for k, v in r.per_query.items()}},
                      lambda d: EvalResult(**{**d, "per_query": {k: np.asarray(v) for k, v in d["per_query"].items()}}))


def eval_set_hash(eval_set: EvalSet) -> str:
    blob = json.dumps([eval_set.queries, eval_set.corpus, eval_set.relevant_docs, eval_set.grades], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _as_dataset(eval_set: EvalSet):
    return EmbeddingQAFinetuneDataset(queries=eval_set.queries, corpus=eval_set.corpus,
                                      relevant_docs=eval_set.relevant_docs)
