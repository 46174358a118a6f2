"""Check a composed config before any work starts, and report every problem at once.

Types and key names are checked by the schemas at compose time; this checks what types cannot say:
ranges, files that must exist, and choices that do not fit together.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig

from runner.infra.errors import RagtuneError

METRIC_RE = re.compile(r"^(base|finetuned|delta)/(hit_rate|precision|recall|mrr|ndcg|map)@(\d+)$")


def _metric_names(cfg: DictConfig) -> set[str]:
    e = cfg.evaluate
    names = {f"hit_rate@{k}" for k in e.hit_rate_at_k}
    names |= {f"{m}@{k}" for k in e.precision_recall_at_k for m in ("precision", "recall")}
    names |= {f"mrr@{k}" for k in e.mrr_at_k} | {f"ndcg@{k}" for k in e.ndcg_at_k}
    return names | {f"map@{k}" for k in e.map_at_k}


def _file_problems(path: str, key: str) -> list[str]:
    """Read a dataset file now, so a bad one fails before hours of work rather than after."""
    from runner.data.pairs import read_qa_dataset

    try:
        read_qa_dataset(path, key)
    except RagtuneError as err:
        return [str(err).rstrip(".")]
    return []


def config_problems(cfg: DictConfig) -> list[str]:
    p: list[str] = []
    ft = cfg.finetune
    if ft.get("_target_"):  # each finetune method has its own knobs: check those it has
        if "learning_rate" in ft and not ft.learning_rate > 0:
            p.append(f"finetune.learning_rate={ft.learning_rate} must be positive (try 5e-5)")
        if ft.epochs != "auto" and (isinstance(ft.epochs, (bool, str)) or not ft.epochs > 0) and not ft.get("max_steps", -1) > 0:
            p.append(f"finetune.epochs={ft.epochs} must be a positive number or auto (or set finetune.max_steps)")
        if ft.batch_size < 2:
            p.append(f"finetune.batch_size={ft.batch_size} must be at least 2: in-batch negatives need company")
        if "warmup_ratio" in ft and not 0 <= ft.warmup_ratio < 1:
            p.append(f"finetune.warmup_ratio={ft.warmup_ratio} must be in [0, 1)")
        from runner.stages.finetune.trainer import LOSSES

        if ft.get("loss") not in (None, *LOSSES):
            p.append(f"finetune.loss={ft.loss} is not one of {', '.join(LOSSES)}")
        if "scale" in ft and not ft.scale > 0:
            p.append(f"finetune.scale={ft.scale} must be positive (1 / temperature; 20 is the usual)")
        if "hardness_strength" in ft and ft.hardness_strength < 0:
            p.append(f"finetune.hardness_strength={ft.hardness_strength} must be 0 (off) or more (try 9)")
        if "directions" in ft:
            from runner.stages.finetune.trainer import directions_problem

            if problem := directions_problem(ft.directions):
                p.append(problem)
        if "hard_negatives" in ft and ft.hard_negatives.num is not None and ft.hard_negatives.num < 0:
            p.append(
                f"finetune.hard_negatives.num={ft.hard_negatives.num} must be 0 (in-batch negatives only), "
                "1 or more, or null (auto: 1 for pairs from a file)"
            )
        if "weight_decay" in ft and ft.weight_decay < 0:
            p.append(f"finetune.weight_decay={ft.weight_decay} must be 0 or more")
        if "time_budget_s" in ft:
            from runner.stages.finetune.budget import check

            p.extend(check(ft.time_budget_s))
        if "dataloader_num_workers" in ft and ft.dataloader_num_workers < 0:
            p.append(f"finetune.dataloader_num_workers={ft.dataloader_num_workers} must be 0 or more")
    ch = cfg.chunker
    if ch.chunk_size == "auto":
        if ch.chunk_overlap < 0:
            p.append(f"chunker.chunk_overlap={ch.chunk_overlap} must be at least 0")
    elif isinstance(ch.chunk_size, bool) or not isinstance(ch.chunk_size, int) or ch.chunk_size <= 0:
        p.append(
            f"chunker.chunk_size={ch.chunk_size!r} must be a positive number of tiktoken tokens, or auto "
            "(the base model's window, in its word pieces)"
        )
    elif not 0 <= ch.chunk_overlap < ch.chunk_size:
        p.append(f"chunker.chunk_overlap={ch.chunk_overlap} must be at least 0 and below chunker.chunk_size={ch.chunk_size}")
    corpus_path = cfg.corpus.get("path")
    if corpus_path is not None and not Path(corpus_path).exists():
        p.append(f"corpus.path={corpus_path} does not exist; point it at your documents")
    if not 0 < cfg.split.val_fraction < 1:
        p.append(f"split.val_fraction={cfg.split.val_fraction} must be between 0 and 1 (try 0.2)")
    gen = cfg.qa_generator
    if "num_questions_per_chunk" in gen and gen.num_questions_per_chunk < 1:
        p.append(f"qa_generator.num_questions_per_chunk={gen.num_questions_per_chunk} must be 1 or more")
    if "remove_prob" in gen and not 0 <= gen.remove_prob <= 1:
        p.append(f"qa_generator.remove_prob={gen.remove_prob} must be in [0, 1]")
    if "min_keywords" in gen and not 1 <= gen.min_keywords <= gen.max_keywords <= gen.pool:
        p.append(
            f"qa_generator.min_keywords={gen.min_keywords}, max_keywords={gen.max_keywords} and "
            f"pool={gen.pool} must satisfy 1 <= min_keywords <= max_keywords <= pool"
        )
    if "path" in gen and Path(gen.path).is_dir():  # a BEIR folder: its qrels/<split>.tsv
        from runner.data.beir import read_beir

        try:
            read_beir(gen.path, gen.split, key="qa_generator.path")
        except RagtuneError as err:
            p.append(str(err).rstrip("."))
    elif "path" in gen:
        p += _file_problems(gen.path, "qa_generator.path")
    if cfg.eval_set.kind == "file":
        p += _file_problems(cfg.eval_set.path, "eval_set.path")
    if cfg.eval_set.kind == "beir":
        from runner.data.beir import read_beir

        try:
            read_beir(cfg.eval_set.path, cfg.eval_set.split)
        except RagtuneError as err:
            p.append(str(err).rstrip("."))
    if cfg.eval_set.kind == "held_out" and "generators" in gen and cfg.eval_set.get("generator") is None:
        p.append(
            "eval_set=held_out asks the training generator for held-out questions, and a mixed generator's "
            "passages differ per kind of query; use eval_set=held_out_ict with it"
        )
    if cfg.eval_set.kind == "held_out" and "path" in gen and cfg.eval_set.get("generator") is None:
        p.append(
            "eval_set=held_out generates questions from held-out documents, which qa_generator=file "
            "cannot do; use eval_set=file eval_set.path=VAL.json with it"
        )
    p += choice_problems(cfg)
    from runner.stages.evaluate.seq_length import check as length_problems

    p += length_problems(cfg.base_model.get("max_seq_length"))
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        p.append(f"device={cfg.device} is not one of auto, cpu, cuda, cuda:N, mps")
    if cfg.precision not in ("auto", "fp32", "fp16", "bf16"):
        p.append(f"precision={cfg.precision} is not one of auto, fp32, fp16, bf16")
    if "mode" in cfg.logger and cfg.logger.mode not in ("auto", "online", "offline", "disabled"):
        p.append(f"logger.mode={cfg.logger.mode} is not one of auto, online, offline, disabled")
    for key in ("hit_rate_at_k", "precision_recall_at_k", "mrr_at_k", "ndcg_at_k", "map_at_k"):
        ks = list(cfg.evaluate[key])
        if not ks or min(ks) < 1:
            p.append(f"evaluate.{key}={ks} must list positive cut-offs")
    if cfg.evaluate.bootstrap < 1000:
        p.append(
            f"evaluate.bootstrap={cfg.evaluate.bootstrap} resamples are too few for a 95% interval whose "
            "ends stay put; use at least 1000 (the default, 10000, costs well under a second)"
        )
    engine = cfg.evaluate.engine
    if engine not in ("fast", "llama_index"):
        p.append(f"evaluate.engine={engine} is not one of fast, llama_index")
    m = METRIC_RE.match(cfg.optimized_metric)
    if engine == "llama_index":
        k = cfg.evaluate.llama_index_top_k
        from runner.stages.evaluate.llama_index_eval import METRICS

        if not m or m.group(2) not in METRICS or int(m.group(3)) != k:
            p.append(
                f"optimized_metric={cfg.optimized_metric} is not computed by evaluate.engine=llama_index, "
                f"which gives {', '.join(f'{n}@{k}' for n in METRICS)} (evaluate.llama_index_top_k={k}); "
                f"use optimized_metric=finetuned/ndcg@{k}"
            )
    elif not m or f"{m.group(2)}@{m.group(3)}" not in _metric_names(cfg):
        p.append(
            f"optimized_metric={cfg.optimized_metric} is not a metric this run computes; use "
            f"base/, finetuned/ or delta/ and one of {', '.join(sorted(_metric_names(cfg)))}"
        )
    return p


def choice_problems(cfg: DictConfig) -> list[str]:
    """The dev split, the keyword and hybrid baselines, merging and the guards."""
    from runner.stages.evaluate.baselines import FUSION_MODES

    p: list[str] = []
    if not 0 <= cfg.dev.fraction < 1:
        p.append(f"dev.fraction={cfg.dev.fraction} must be in [0, 1) (0: no dev split; try 0.15)")
    if cfg.dev.path is not None:
        p += _file_problems(cfg.dev.path, "dev.path")
    b = cfg.evaluate.baselines
    import Stemmer

    if b.language not in Stemmer.algorithms():
        p.append(
            f"evaluate.baselines.language={b.language} has no Snowball stemmer; use one of "
            f"{', '.join(a for a in Stemmer.algorithms() if a != 'porter')}"
        )
    if not b.fusion_modes or any(m not in FUSION_MODES for m in b.fusion_modes):
        p.append(f"evaluate.baselines.fusion_modes={list(b.fusion_modes)} must list some of {', '.join(FUSION_MODES)}")
    if not b.top_k or min(b.top_k) < 1:
        p.append(f"evaluate.baselines.top_k={list(b.top_k)} must list positive k (try [10,20,50])")
    if not b.dense_weights or not all(0 < w < 1 for w in b.dense_weights):
        p.append(f"evaluate.baselines.dense_weights={list(b.dense_weights)} must lie strictly between 0 and 1")
    if not all(0 < a < 1 for a in cfg.merge.alphas):
        p.append(
            f"merge.alphas={list(cfg.merge.alphas)} must lie strictly between 0 (the base) and 1 (the "
            "finetuned model), which are always scored"
        )
    if cfg.guard.tolerance < 0:
        p.append(f"guard.tolerance={cfg.guard.tolerance} must be 0 or more (try 0.01)")
    for name, spec in (cfg.guard.sets or {}).items():
        path, kind = spec.get("path"), spec.get("kind")
        if kind not in ("file", "beir") or not path:
            p.append(
                f"guard.sets.{name} needs kind: file or beir and a path; for example "
                f"+guard.sets.{name}={{kind: beir, path: data/nfcorpus, split: test}}"
            )
        elif kind == "file":
            p += _file_problems(path, f"guard.sets.{name}.path")
        else:
            from runner.data.beir import read_beir

            try:
                read_beir(path, spec.get("split", "test"), key=f"guard.sets.{name}.path")
            except RagtuneError as err:
                p.append(str(err).rstrip("."))
    return p


def validate(cfg: DictConfig) -> None:
    problems = config_problems(cfg)
    if problems:
        raise RagtuneError(
            f"the config has {len(problems)} problem(s): "
            + "; ".join(problems)
            + ". Fix them on the command line or in conf/, then run again."
        )
