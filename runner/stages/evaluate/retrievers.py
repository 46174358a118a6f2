"""Every retriever a user could ship, scored on the same eval set: BM25 and hybrids of BM25 with the
base and with the run's model, next to the dense models. Their settings come from the dev split
(`runner.stages.evaluate.choices`); the eval set is only scored, with the settings already fixed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from runner.stages.evaluate.baselines import Bm25, Bm25Settings, Fusion, Ranking, bm25_grid, fuse, fusion_grid
from runner.stages.evaluate.choices import choose_bm25, choose_fusion, metric_k
from runner.data.eval_set import EvalSet
from runner.stages.evaluate.scoring import K_KEYS, EvalResult, score_ranked

log = logging.getLogger("ragtune")
DEFAULT_FUSION = Fusion("relative_score", 10, 0.5)  # LlamaIndex's equal weights, its default k


def depth(cfg) -> int:
    """How deep each side of a hybrid ranks: the largest fusion k and the largest metric cut-off."""
    return max(max(cfg.evaluate.baselines.top_k), *(max(cfg.evaluate[k]) for k in K_KEYS))


def cutoffs(evaluate_cfg, metric: str) -> dict:
    """The evaluation's metric cut-offs, plus the deciding metric's (so every row has it)."""
    from runner.stages.evaluate.choices import _FAMILY

    ks = {name: list(evaluate_cfg[name]) for name in K_KEYS}
    name, k = metric_k(metric)
    if k not in ks[_FAMILY[name]]:
        ks[_FAMILY[name]].append(k)
    return ks


def choose_lexical(baselines_cfg, dev: EvalSet | None, metric: str) -> tuple[Bm25Settings, dict]:
    grid = bm25_grid(baselines_cfg.language, baselines_cfg.stopwords, baselines_cfg.stemming)
    if dev is None:
        return grid[0], {"chosen": grid[0].as_dict(), "reason": "no dev split: LlamaIndex's default kept"}
    settings, record = choose_bm25(dev, grid, metric)
    log.info("BM25 on dev: %s (%s %.4f)", settings.as_dict(), metric, record["dev"])
    return settings, record


def choose_hybrid(
    name: str, dense_dev: Ranking | None, lexical_dev: Ranking | None, dev: EvalSet | None, baselines_cfg, metric: str
) -> tuple[Fusion, dict]:
    if dev is None or dense_dev is None:
        return DEFAULT_FUSION, {"chosen": DEFAULT_FUSION.as_dict(), "reason": "no dev split: LlamaIndex's defaults kept"}
    grid = fusion_grid(baselines_cfg.fusion_modes, baselines_cfg.top_k, baselines_cfg.dense_weights)
    fusion, record = choose_fusion(dense_dev, lexical_dev, dev, grid, metric)
    log.info("%s on dev: %s (%s %.4f)", name, fusion.as_dict(), metric, record["dev"])
    return fusion, record


def scored(ranking: Ranking, eval_set: EvalSet, evaluate_cfg, metric: str) -> EvalResult:
    return score_ranked(ranking.ranked_ids(), eval_set, cutoffs(evaluate_cfg, metric))


def lexical_ranking(eval_set: EvalSet, settings: Bm25Settings, k: int) -> Ranking:
    return Bm25(eval_set.corpus, settings).search([eval_set.queries[q] for q in eval_set.answered_query_ids()], k)


def hybrid_ranking(dense: Ranking, lexical: Ranking, fusion: Fusion) -> Ranking:
    return fuse(dense, lexical, fusion)


@dataclass
class Before:
    """What the run knows before training: BM25's dev-chosen settings and rankings, the base model's
    rankings of the dev and eval queries (the dense side of the base hybrid), guard sets scored by the base."""

    bm25: Bm25Settings | None = None
    lexical_dev: Ranking | None = None
    lexical_eval: Ranking | None = None
    base_dense_dev: Ranking | None = None
    base_dense_eval: Ranking | None = None
    guard_base: dict = field(default_factory=dict)  # name -> (EvalSet, EvalResult)
    records: dict = field(default_factory=dict)


def lexical_rankings(cfg, dev: EvalSet | None, eval_set: EvalSet, metric: str, before: Before) -> None:
    before.bm25, before.records["bm25"] = choose_lexical(cfg.evaluate.baselines, dev, metric)
    k = depth(cfg)
    before.lexical_eval = lexical_ranking(eval_set, before.bm25, k)
    if dev is not None:
        before.lexical_dev = lexical_ranking(dev, before.bm25, k)


def rows_and_fusions(
    cfg, before: Before, dense: dict, dense_dev: dict, eval_set: EvalSet, dev: EvalSet | None, metric: str, choices: dict
) -> tuple[dict, dict]:
    """BM25's row and one hybrid per dense model (`dense`: name -> its eval Ranking; `dense_dev`: its dev
    Ranking), each hybrid's fusion chosen on dev; returns ({row: EvalResult}, {row: fusion settings})."""
    rows = {"bm25": scored(before.lexical_eval, eval_set, cfg.evaluate, metric)}
    fusions = {}
    for name, ranking in dense.items():
        fusion, choices[f"fusion_{name}"] = choose_hybrid(
            name, dense_dev.get(name), before.lexical_dev, dev, cfg.evaluate.baselines, metric
        )
        rows[name] = scored(hybrid_ranking(ranking, before.lexical_eval, fusion), eval_set, cfg.evaluate, metric)
        fusions[name] = fusion.as_dict()
    return rows, fusions
