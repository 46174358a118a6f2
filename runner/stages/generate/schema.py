"""The `qa_generator` group's schemas (one per option in conf/qa_generator/), and the checks of its knobs.

Kept cheap to import: `python -m runner --cfg job` reads these through `runner.config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from omegaconf import MISSING


@dataclass
class IctGenerator:
    _target_: str = "runner.stages.generate.generators.ict_pairs"
    _partial_: bool = True
    num_questions_per_chunk: int = 1
    remove_prob: float = 0.9
    min_query_words: int = 5
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class KeywordGenerator:
    _target_: str = "runner.stages.generate.generators.keyword_pairs"
    _partial_: bool = True
    num_questions_per_chunk: int = 1
    min_keywords: int = 3
    max_keywords: int = 6
    pool: int = 12  # the chunk's best words (TF-IDF) that keywords are drawn from
    seed: int = "${seed}"  # type: ignore[assignment]


@dataclass
class TitleGenerator:
    _target_: str = "runner.stages.generate.generators.title_pairs"
    _partial_: bool = True
    min_title_words: int = 2


@dataclass
class MixedGenerator:
    _target_: str = "runner.stages.generate.generators.mixed_pairs"
    _partial_: bool = True
    generators: Dict[str, Any] = field(default_factory=dict)  # name -> a qa_generator config


@dataclass
class FileGenerator:
    _target_: str = "runner.stages.generate.generators.pairs_from_file"
    _partial_: bool = True
    path: str = MISSING  # an EmbeddingQAFinetuneDataset JSON, or a BEIR folder
    split: str = "train"  # a BEIR folder's qrels/<split>.tsv


@dataclass
class LlmGenerator:
    _target_: str = "runner.stages.generate.llm.llm_pairs"
    _partial_: bool = True
    llm: Any = MISSING  # a llama-index LLM, chosen with qa_generator/llm=openai|openai_like|ollama
    num_questions_per_chunk: int = 2
    prompt: Optional[str] = None  # a template with {context_str} and {num_questions_per_chunk}
    max_chunks: Optional[int] = None  # budget: at most this many chunks are sent
    max_concurrency: int = 8
    retries: int = 3
    backoff_s: float = 1.0
    cache_dir: Optional[str] = "${cache.dir}/llm_questions"  # questions kept per chunk as they arrive


QA_GENERATOR = {
    "ict": IctGenerator,
    "keywords": KeywordGenerator,
    "titles": TitleGenerator,
    "mixed": MixedGenerator,
    "file": FileGenerator,
    "llm": LlmGenerator,
}


def kind(gen) -> str | None:
    """Which `qa_generator` option `gen` is (a QA_GENERATOR name), by its declared `_target_`."""
    from runner.infra.options import option_of

    return option_of(gen, QA_GENERATOR)


def problems(cfg) -> list[str]:
    """What the `qa_generator` types cannot say: counts and ranges, and a pairs file that reads."""
    p: list[str] = []
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
    reads_file = kind(gen) == "file"
    if reads_file and Path(gen.path).is_dir():  # a BEIR folder: its qrels/<split>.tsv
        from runner.data.beir import beir_problems

        p += beir_problems(gen.path, gen.split, key="qa_generator.path")
    elif reads_file:
        from runner.data.pairs import qa_file_problems  # llama-index: only when there is a file to read

        p += qa_file_problems(gen.path, "qa_generator.path")
    return p + _held_out_problems(cfg)


def _held_out_problems(cfg) -> list[str]:
    """eval_set=held_out asks the training generator for the held-out questions: can it write them?"""
    es = cfg.eval_set
    if es.get("kind") != "held_out" or es.get("generator") is not None:
        return []
    if kind(cfg.qa_generator) == "mixed":
        return [
            "eval_set=held_out asks the training generator for held-out questions, and a mixed generator's "
            "passages differ per kind of query; use eval_set=held_out_ict with it"
        ]
    if kind(cfg.qa_generator) == "file":
        return [
            "eval_set=held_out generates questions from held-out documents, which qa_generator=file "
            "cannot do; use eval_set=file eval_set.path=VAL.json with it"
        ]
    return []
