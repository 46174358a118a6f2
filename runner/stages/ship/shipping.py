"""What the run ships: the model each row was scored with, `retriever.json` (the verdict's retriever and
every row's, each rebuilt by `load_retriever`), and the data hashes for the model card."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from runner.data.eval_set import EvalSet
from runner.data.rows import BASE, BM25, FINETUNED, HYBRID_BASE, HYBRID_FINETUNED, MERGED
from runner.stages.evaluate.retrievers import Before, depth
from runner.stages.evaluate.schema import K_KEYS
from runner.stages.ship.retriever import retriever_spec, write_spec


def shipped_models(cfg, model_dir, tuned_dir, merged: bool, adapter_class: str | None) -> dict:
    """{row: {"model", "revision", "adapter"}}: the model each dense row was scored with. The base rows: the
    base model (with its revision); `finetuned`: the model as trained (finetuned_model/ beside a kept merge;
    for finetune=adapter the base model with the adapter); `merged`: model/; the finetuned hybrid: the run's
    model (the merge when it was kept)."""
    base = {"model": str(cfg.base_model.name_or_path), "revision": cfg.base_model.get("revision"), "adapter": None}
    models = {BASE: base, HYBRID_BASE: base}
    if tuned_dir is None:
        return models
    if adapter_class:
        models[FINETUNED] = {**base, "adapter": {"path": str(tuned_dir), "class": adapter_class}}
    else:
        models[FINETUNED] = {"model": str(tuned_dir), "revision": None, "adapter": None}
    if merged:
        models[MERGED] = {"model": str(model_dir), "revision": None, "adapter": None}
    models[HYBRID_FINETUNED] = models[MERGED] if merged else models[FINETUNED]
    return models


def scored_depth(cfg, row: str, spec: dict) -> int:
    """How many hits the run ranked `row` to, so the shipped retriever returns as many: a hybrid its fusion's k,
    BM25 the largest fusion k or metric cut-off, a dense row the largest cut-off (map@100: 100; the llama_index
    engine: its similarity_top_k)."""
    if spec["fusion"]:
        return int(spec["fusion"]["top_k"])
    if row == BM25:
        return depth(cfg)
    if cfg.evaluate.engine == "llama_index":
        return int(cfg.evaluate.llama_index_top_k)
    return max(max(cfg.evaluate[k]) for k in K_KEYS)


def ship_spec(cfg, out: Path, verdict: dict, models: dict, max_seq_length, precision, before: Before, fusions, chunker) -> dict:
    """retriever.json: the verdict's retriever, and under `rows` every row the run scored, each rebuilt by
    `load_retriever(run_dir, documents, row=...)`."""

    def spec_of(row: str) -> dict:
        spec = retriever_spec(
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
        return {**spec, "similarity_top_k": scored_depth(cfg, row, spec)}

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
