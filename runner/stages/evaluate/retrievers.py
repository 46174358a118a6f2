"""Every retriever a user could ship, scored on the same eval set: BM25 and hybrids of BM25 with the
base and with the run's model, next to the dense models. Their settings were chosen before training on
the training side (`before_training`) and, for the finetuned model's hybrid weight, on the dev split
(`choices.choose_weight`); the eval set is only scored, with the settings already fixed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from runner.data.eval_set import EvalSet
from runner.data.rows import BM25, HYBRID_BASE
from runner.stages.evaluate.baselines import Bm25, Bm25Settings, Fusion, Ranking, fuse
from runner.stages.evaluate.choices import _FAMILY, choose_weight, metric_k
from runner.stages.evaluate.schema import K_KEYS
from runner.stages.evaluate.scoring import EvalResult, score_ranked

log = logging.getLogger("ragtune")


def depth(cfg) -> int:
    """How deep each side of a hybrid ranks: the largest fusion k and the largest metric cut-off."""
    return max(max(cfg.evaluate.baselines.top_k), *(max(cfg.evaluate[k]) for k in K_KEYS))


def cutoffs(evaluate_cfg, metric: str) -> dict:
    """The evaluation's metric cut-offs, plus the deciding metric's (so every row has it)."""
    ks = {name: list(evaluate_cfg[name]) for name in K_KEYS}
    name, k = metric_k(metric)
    if k not in ks[_FAMILY[name]]:
        ks[_FAMILY[name]].append(k)
    return ks


def scored(ranking: Ranking, eval_set: EvalSet, evaluate_cfg, metric: str) -> EvalResult:
    return score_ranked(ranking.ranked_ids(), eval_set, cutoffs(evaluate_cfg, metric))


def lexical_ranking(eval_set: EvalSet, settings: Bm25Settings, k: int) -> Ranking:
    return Bm25(eval_set.corpus, settings).search([eval_set.queries[q] for q in eval_set.answered_query_ids()], k)


def hybrid_ranking(dense: Ranking, lexical: Ranking, fusion: Fusion) -> Ranking:
    return fuse(dense, lexical, fusion)


@dataclass
class Before:
    """What the run knows before training: BM25's settings and the base hybrid's fusion (chosen on the training
    side), BM25's rankings of the dev and eval queries, the base model's eval ranking (the dense side of the base
    hybrid) and per-question dev scores, guard sets scored by the base, and the records of the choices."""

    bm25: Bm25Settings | None = None
    fusion_base: Fusion | None = None
    lexical_dev: Ranking | None = None
    lexical_eval: Ranking | None = None
    base_dev_scores: np.ndarray | None = None
    base_dense_eval: Ranking | None = None
    guard_base: dict = field(default_factory=dict)  # name -> (EvalSet, EvalResult)


def lexical_rankings(cfg, dev: EvalSet | None, eval_set: EvalSet, before: Before) -> None:
    """BM25, with the settings chosen before training, on the eval set and the dev split."""
    k = depth(cfg)
    before.lexical_eval = lexical_ranking(eval_set, before.bm25, k)
    if dev is not None:
        before.lexical_dev = lexical_ranking(dev, before.bm25, k)


def rows_and_fusions(
    cfg, before: Before, dense: dict, dense_dev: dict, eval_set: EvalSet, dev: EvalSet | None, metric: str
) -> tuple[dict, dict, dict]:
    """BM25's row and one hybrid per dense model (`dense`: name -> its eval Ranking; `dense_dev`: its dev
    Ranking); the base hybrid's fusion was chosen before training, the finetuned one's weight moves on dev.
    Returns ({row: EvalResult}, {row: fusion settings}, {"fusion_<row>": the record of that choice})."""
    rows = {BM25: scored(before.lexical_eval, eval_set, cfg.evaluate, metric)}
    fusions, records = {}, {}
    for name, ranking in dense.items():
        fusion = before.fusion_base
        if name != HYBRID_BASE:
            fusion, records[f"fusion_{name}"] = tuned_fusion(cfg, before, dense_dev.get(name), dev, metric)
        rows[name] = scored(hybrid_ranking(ranking, before.lexical_eval, fusion), eval_set, cfg.evaluate, metric)
        fusions[name] = fusion.as_dict()
    return rows, fusions, records


def tuned_fusion(cfg, before: Before, dense_dev: Ranking | None, dev: EvalSet | None, metric: str) -> tuple[Fusion, dict]:
    """The finetuned model's hybrid: the base hybrid's fusion, its weight moved on the dev split where that is
    expected to score higher."""
    base = before.fusion_base
    if dev is None or dense_dev is None:
        return base, {
            "chosen": base.as_dict(),
            "questions": 0,
            "decided_by": "prior",
            "reason": "no dev split: the base hybrid's fusion",
        }
    n = len(dev.answered_query_ids())
    evidence = f"dev split: {n} questions the model never trained on, over {len(dev.corpus)} passages"
    how = {"metric": metric, "n_resamples": cfg.evaluate.bootstrap, "seed": cfg.seed, "evidence": evidence}
    fusion, record = choose_weight(dense_dev, before.lexical_dev, dev, base, cfg.evaluate.baselines.dense_weights, how)
    log.info("hybrid_finetuned: %s", record["reason"])
    return fusion, record
