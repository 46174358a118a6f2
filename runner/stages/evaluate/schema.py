"""The `eval_set` group's schemas (one per option in conf/eval_set/), `evaluate` (with its `baselines`) and
`merge`, and the checks of their knobs; `base_model.max_seq_length: auto` is chosen here too.

Kept cheap to import: `python -m runner --cfg job` reads these through `runner.config`; the checks import
the stage's modules only when they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING

# the cut-off lists of `evaluate`, one per metric family
K_KEYS = ("hit_rate_at_k", "precision_recall_at_k", "mrr_at_k", "ndcg_at_k", "map_at_k")


@dataclass
class HeldOutEvalSet:
    kind: str = "held_out"
    generator: Optional[Any] = None  # null: the training generator; else a qa_generator config (held_out_ict)


@dataclass
class FileEvalSet:
    kind: str = "file"
    path: str = MISSING


@dataclass
class BeirEvalSet:
    kind: str = "beir"
    path: str = MISSING  # folder with corpus.jsonl, queries.jsonl, qrels/<split>.tsv
    split: str = "test"


EVAL_SET = {"held_out": HeldOutEvalSet, "file": FileEvalSet, "beir": BeirEvalSet}


# The written defaults of the baselines' choices: the candidate the benchmarks' priors are measured against
# (runner/infra/priors.py), and what a choice keeps on a tie or with no question to decide on
# (runner/infra/choosing.py). Each was the best on average on the training sides of the benchmarks
# (`python bench/priors.py show ...`; docs/auto.md has the tables), never on an eval set.
# Tokenisation: stemming won on the built-in run (+0.023 nDCG@10) and SciFact (+0.023), lost on long passages
# (-0.015) and on a filings set; stopwords moved nothing but the filings (+): LlamaIndex's default stays.
BM25_PRIOR = {"stopwords": True, "stemming": True}
BM25_PRIOR_WHY = "LlamaIndex's BM25Retriever default (stopwords and stemming): best on average across the benchmarks"
# b 0.9 was best or near it on all three and on the filings set (k1 2.0, b 0.9: 0.790 against 0.775 at bm25s's 1.5, 0.75)
BM25_PARAMS_PRIOR = {"k1": 1.5, "b": 0.9}
BM25_PARAMS_PRIOR_WHY = "k1 1.5, b 0.9: the best mean rank across the benchmarks (bm25s's b 0.75 ranked 4th)"
# relative_score, k 50, dense weight 0.4: the best mean rank of the 57 fusions across the benchmarks; LlamaIndex's
# default (relative_score, k 10, equal weights) scored 0.007-0.015 below the best on every one
FUSION_PRIOR = {"mode": "relative_score", "top_k": 50, "dense_weight": 0.4}
FUSION_PRIOR_WHY = "relative_score, k 50, dense weight 0.4: the best mean rank across the benchmarks"
WEIGHT_REACH = 0.2  # the finetuned model's hybrid: dense weights within this of the base hybrid's are tried on dev


@dataclass
class BaselinesConfig:
    enabled: bool = True  # BM25 and BM25 + dense hybrids next to the dense models, and in the verdict
    language: str = "english"  # the Snowball stemmer's and the stopword list's language
    # null: chosen on every training-side question (with and without); true / false fixes it. Prior: BM25_PRIOR
    stopwords: Optional[bool] = None
    stemming: Optional[bool] = None  # null: chosen as stopwords is
    k1: List[float] = field(default_factory=lambda: [0.9, 1.2, 1.5, 2.0])  # BM25's k1 to try; one value fixes it
    b: List[float] = field(default_factory=lambda: [0.4, 0.6, 0.75, 0.9])  # BM25's b to try. Prior: BM25_PARAMS_PRIOR
    # the base model's hybrid: every mode x k x weight tried on the training side's questions (prior: FUSION_PRIOR);
    # the finetuned model's keeps that mode and k, and the dev split moves its weight by up to WEIGHT_REACH
    fusion_modes: List[str] = field(default_factory=lambda: ["relative_score", "dist_based_score", "reciprocal_rerank"])
    top_k: List[int] = field(default_factory=lambda: [10, 20, 50])  # each retriever's similarity_top_k, and the fused cut
    dense_weights: List[float] = field(
        default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    )  # the dense side's weight


@dataclass
class EvaluateConfig:
    engine: str = "fast"  # fast | llama_index (VectorStoreIndex + RetrieverEvaluator: hit rate, MRR)
    llama_index_top_k: int = 10  # similarity_top_k of the llama_index engine
    batch_size: int = 64
    bootstrap: int = 10000  # resamples for the paired BCa bootstrap CI and the randomization test
    hit_rate_at_k: List[int] = field(default_factory=lambda: [1, 5, 10])
    precision_recall_at_k: List[int] = field(default_factory=lambda: [10])
    mrr_at_k: List[int] = field(default_factory=lambda: [10])
    ndcg_at_k: List[int] = field(default_factory=lambda: [10])
    map_at_k: List[int] = field(default_factory=lambda: [100])
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)


@dataclass
class MergeConfig:
    enabled: bool = True  # interpolate base and finetuned weights (WiSE-FT); keep one where its expected score on dev is higher
    alphas: List[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])  # the finetuned model's weight


def metric_names(evaluate) -> set[str]:
    """The metrics the fast engine computes with these `evaluate` cut-offs: {"ndcg@10", ...}."""
    names = {f"hit_rate@{k}" for k in evaluate.hit_rate_at_k}
    names |= {f"{m}@{k}" for k in evaluate.precision_recall_at_k for m in ("precision", "recall")}
    names |= {f"mrr@{k}" for k in evaluate.mrr_at_k} | {f"ndcg@{k}" for k in evaluate.ndcg_at_k}
    return names | {f"map@{k}" for k in evaluate.map_at_k}


def problems(cfg) -> list[str]:
    """What the types of `eval_set`, `evaluate`, `merge` and `base_model.max_seq_length` cannot say."""
    p = _eval_set_problems(cfg) + max_seq_length_problems(cfg.base_model.get("max_seq_length"))
    p += _evaluate_problems(cfg.evaluate) + _baseline_problems(cfg.evaluate.baselines)
    if not all(0 < a < 1 for a in cfg.merge.alphas):
        p.append(
            f"merge.alphas={list(cfg.merge.alphas)} must lie strictly between 0 (the base) and 1 (the "
            "finetuned model), which are always scored"
        )
    return p


def _eval_set_problems(cfg) -> list[str]:
    """An eval set file or folder that reads. (Whether the training generator can write eval_set=held_out's
    questions is the generate stage's check: runner/stages/generate/schema.py.)"""
    p: list[str] = []
    es = cfg.eval_set
    if es.kind == "file":
        from runner.data.pairs import qa_file_problems  # llama-index: only when there is a file to read

        p += qa_file_problems(es.path, "eval_set.path")
    if es.kind == "beir":
        from runner.data.beir import beir_problems

        p += beir_problems(es.path, es.split, key="eval_set.path")
    return p


def _evaluate_problems(e) -> list[str]:
    p: list[str] = []
    for key in K_KEYS:
        ks = list(e[key])
        if not ks or min(ks) < 1:
            p.append(f"evaluate.{key}={ks} must list positive cut-offs")
    if e.bootstrap < 1000:
        p.append(
            f"evaluate.bootstrap={e.bootstrap} resamples are too few for a 95% interval whose "
            "ends stay put; use at least 1000 (the default, 10000, costs well under a second)"
        )
    if e.engine not in ("fast", "llama_index"):
        p.append(f"evaluate.engine={e.engine} is not one of fast, llama_index")
    return p


def _baseline_problems(b) -> list[str]:
    """The keyword and hybrid baselines' grids."""
    import Stemmer

    from runner.stages.evaluate.baselines import FUSION_MODES

    p: list[str] = []
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
    if not b.k1 or not all(k1 > 0 for k1 in b.k1):
        p.append(f"evaluate.baselines.k1={list(b.k1)} must list positive values (try [0.9,1.2,1.5,2.0]; 1.5 is bm25s's)")
    if not b.b or not all(0 <= x <= 1 for x in b.b):
        p.append(f"evaluate.baselines.b={list(b.b)} must lie between 0 and 1 (try [0.4,0.6,0.75,0.9]; 0.75 is bm25s's)")
    return p


def max_seq_length_problems(value, key: str = "base_model.max_seq_length") -> list[str]:
    """Problems with a max_seq_length setting (the validator's), as sentences."""
    if value is None or value == "auto":
        return []
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return [
            f"{key}={value!r} is not a length; give a positive number of word pieces (e.g. 256), auto (chosen "
            "on the training side's questions, from the passages' lengths) or null (the model's own setting)"
        ]
    return []
