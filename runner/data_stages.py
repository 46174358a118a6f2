"""The data side of a run, wired through the stage cache: load -> chunk -> split -> generate, and the
dev and eval sets. `runner.pipeline` calls `prepare_data`; the keys are derived before any work.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from runner.data.eval_set import EvalSet, eval_set_from_json, eval_set_to_json
from runner.data.pairs import EmbeddingQAFinetuneDataset, dataset_from_json, dataset_to_json, write_qa_dataset
from runner.infra.errors import RagtuneError
from runner.infra.fingerprint import model_fingerprint, short_identity
from runner.infra.models import load_model
from runner.infra.stage_cache import StageCache
from runner.stages.chunk.chunking import ChunkPlan, chunk_corpus, chunks_from_json, chunks_to_json, plan_chunks
from runner.stages.evaluate.eval_sets import held_out_eval_set, read_eval_set
from runner.stages.generate.generators import generate_pairs
from runner.stages.generate.schema import kind as generator_kind
from runner.stages.load.corpus import documents_from_json, documents_to_json, load_corpus
from runner.stages.split.splitting import carve_dev_pairs, split_chunks, splits_from_json, splits_to_json

log = logging.getLogger("ragtune")


def reads_pairs_from_file(cfg: DictConfig) -> bool:
    """qa_generator=file: the pairs are read, not generated from the chunks (no generate stage, no cache)."""
    return generator_kind(cfg.qa_generator) == "file"


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
    name, revision = str(cfg.base_model.name_or_path), cfg.base_model.get("revision")
    return plan_chunks(cfg.chunker, model, short_identity(name, model_fingerprint(name, revision)), revision, name)


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
    # the held-out documents are carved first, the dev split from what is left: the held-out part, and so the
    # eval set made from it, depends on the split's own settings and not on dev.* (a dev sweep keeps its eval set)
    held_settings = {k: v for k, v in split_settings(cfg).items() if not k.startswith("dev_")}
    held_part = stages.key("split", held_settings, [keys["chunk"]], (split_chunks, splits_to_json, splits_from_json))
    if train_finetune and not reads_pairs_from_file(cfg):
        keys["generate"] = stages.key(
            "generate", plain(cfg.qa_generator), [keys["split"]], (generate_pairs, dataset_to_json, dataset_from_json)
        )
    for stage, wanted, part in (("dev_set", dev_from_chunks(cfg), keys["split"]), ("eval_set", held_out, held_part)):
        if wanted:  # questions from held-out documents, by the eval set's generator
            keys[stage] = stages.key(
                stage, plain(eval_generator_cfg(cfg)), [part], (held_out_eval_set, eval_set_to_json, eval_set_from_json)
            )
    return keys


def dev_from_chunks(cfg: DictConfig) -> bool:
    """The dev split is carved from the corpus's documents (not from pairs read from a file, not a dev file), and
    only where the corpus is the run's data: it trains on pairs generated from it, or scores questions from its
    held-out documents. `finetune=none eval_set=file|beir` scores the user's file, so a dev split of the corpus
    (the built-in Python reference by default) would choose BM25, the fusion and the window on another corpus:
    those choices fall to their written defaults instead, unless `dev.path` names a dev file."""
    generates = bool(cfg.finetune.get("_target_")) and not reads_pairs_from_file(cfg)
    corpus_is_data = generates or cfg.eval_set.kind == "held_out"
    return corpus_is_data and cfg.dev.path is None and cfg.dev.fraction > 0 and not reads_pairs_from_file(cfg)


def split_settings(cfg: DictConfig) -> dict:
    return {
        **OmegaConf.to_container(cfg.split, resolve=True),
        "held_out": cfg.eval_set.kind == "held_out",
        "dev_fraction": cfg.dev.fraction if dev_from_chunks(cfg) else 0.0,
        "dev_seed": cfg.dev.seed,
    }


class DataStages:
    """load -> chunk -> split, each through the stage cache, computed only when a later stage misses.

    The keys are known before any work, so when the generate and eval_set entries hit, nothing
    upstream is loaded at all. The split's counts land in `counts` when it is computed or read.
    """

    def __init__(self, cfg: DictConfig, stages: StageCache, keys: dict, chunking: ChunkPlan, counts: dict):
        self.cfg, self.stages, self.keys, self.chunking, self.counts = cfg, stages, keys, chunking, counts

    def documents(self):
        load = functools.partial(load_corpus, self.cfg.corpus)
        return self.stages.run("load", self.keys["load"], load, documents_to_json, documents_from_json)

    def chunks(self):
        chunk = functools.partial(chunk_corpus, plan=self.chunking)
        return self.stages.run("chunk", self.keys["chunk"], chunk, chunks_to_json, chunks_from_json, needs=(self.documents,))

    @functools.cached_property
    def parts(self) -> dict:
        settings = split_settings(self.cfg)
        split = functools.partial(
            split_chunks,
            val_fraction=settings["val_fraction"],
            seed=settings["seed"],
            held_out=settings["held_out"],
            dev_fraction=settings["dev_fraction"],
            dev_seed=settings["dev_seed"],
        )
        parts = self.stages.run("split", self.keys["split"], split, splits_to_json, splits_from_json, needs=(self.chunks,))
        self.counts.update(parts["counts"])
        return parts


def prepare_data(
    cfg: DictConfig, stages: StageCache, train_finetune: bool, counts: dict, chunking: ChunkPlan | None = None
) -> tuple:
    """load -> chunk -> split -> generate (and the dev and held-out eval sets), each through the stage
    cache; returns (train pairs, dev set or None, eval set) and adds each computed stage's counts to `counts`."""
    chunking = chunking or chunk_plan(cfg)
    keys = data_keys(cfg, stages, train_finetune, chunking)
    data = DataStages(cfg, stages, keys, chunking, counts)
    reports: dict[str, dict] = {"generate": {}, "dev_set": {}, "eval_set": {}}
    pairs, dev_set = training_pairs(cfg, data, train_finetune, reports["generate"])
    sets = held_out_sets(data, reports)
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


def training_pairs(cfg: DictConfig, data: DataStages, train_finetune: bool, report: dict) -> tuple:
    """(train pairs or None, dev set carved from them or None): read from a file (qa_generator=file,
    the dev split carved by query), or generated from the train chunks (the generate stage)."""
    pairs, dev_set = None, None
    if reads_pairs_from_file(cfg) and (train_finetune or (cfg.dev.path is None and cfg.dev.fraction > 0)):
        pairs = instantiate(cfg.qa_generator)(None)
        if cfg.dev.path is None and cfg.dev.fraction > 0:
            pairs, dev_set = carve_dev_pairs(pairs, cfg.dev.fraction, cfg.dev.seed)
        pairs = pairs if train_finetune else None
    elif train_finetune:
        pairs = data.stages.run(
            "generate",
            data.keys["generate"],
            functools.partial(generate_pairs, generator=instantiate(cfg.qa_generator), report=report),
            dataset_to_json,
            dataset_from_json,
            needs=(lambda: data.parts["train"],),
            keep=lambda: not report.get("failed_chunks"),
        )
    return pairs, dev_set


def held_out_sets(data: DataStages, reports: dict) -> dict:
    """The dev and eval sets whose questions the eval set's generator writes from held-out documents."""
    sets = {}
    for stage, part in (("dev_set", "dev"), ("eval_set", "held_out")):
        if stage in data.keys:
            sets[stage] = data.stages.run(
                stage,
                data.keys[stage],
                functools.partial(held_out_eval_set, generator=instantiate(eval_generator_cfg(data.cfg)), report=reports[stage]),
                eval_set_to_json,
                eval_set_from_json,
                needs=(lambda part=part: data.parts[part],),
                keep=lambda stage=stage: not reports[stage].get("failed_chunks"),
            )
    return sets


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
