"""The keyword and hybrid retrievers' choices: BM25's tokenisation and its k1 and b, each hybrid's fusion
mode, k and weight. Each is decided by `runner.infra.choosing.choose` (the candidate with the highest expected
score: the run's evidence and the benchmarks' prior, each weighted by its precision) on the questions that are
fair for it:

- before training (BM25, the base model's hybrid): every question of the training side, training pairs and
  dev split together, over the training side's passages (`eval_sets.training_side`);
- after training (the finetuned model's hybrid): the dev split only, questions the model never trained on,
  and only the weight moves: the mode and k stay the base hybrid's (chosen on the most evidence), the
  weight starts there (the default) and moves to a neighbour where its expected score is higher.

The written defaults are in the stage's schema (`runner/stages/evaluate/schema.py`), next to the knobs.
"""

from __future__ import annotations

import re
import time

import numpy as np

from runner.data.eval_set import EvalSet
from runner.infra.choosing import choose
from runner.infra.priors import priors_for
from runner.infra.priors import why as prior_why
from runner.infra.metrics import per_query_metrics
from runner.stages.evaluate.baselines import Bm25, Bm25Settings, Fusion, Ranking, fuse
from runner.stages.evaluate.schema import BM25_PARAMS_PRIOR_WHY, BM25_PRIOR_WHY, FUSION_PRIOR_WHY, WEIGHT_REACH

_FAMILY = {
    "hit_rate": "hit_rate_at_k",
    "precision": "precision_recall_at_k",
    "recall": "precision_recall_at_k",
    "mrr": "mrr_at_k",
    "ndcg": "ndcg_at_k",
    "map": "map_at_k",
}


def metric_k(metric: str) -> tuple[str, int]:
    """`ndcg@10` (or `finetuned/ndcg@10`) -> ("ndcg", 10)."""
    name, k = re.fullmatch(r"(?:\w+/)?(\w+)@(\d+)", metric).groups()
    return name, int(k)


def per_query(ranked_ids: list[list[str]], eval_set: EvalSet, query_ids: list[str], metric: str) -> np.ndarray:
    """One value of `metric` per query, in `query_ids` order, from each query's ranked doc ids."""
    name, k = metric_k(metric)
    ks = {family: () for family in set(_FAMILY.values())}
    ks[_FAMILY[name]] = (k,)
    relevant = [set(eval_set.relevant_docs[q]) for q in query_ids]
    grades = [eval_set.grades[q] for q in query_ids] if eval_set.grades else None
    return per_query_metrics(ranked_ids, relevant, grades=grades, **ks)[f"{name}@{k}"]


def _table(rankings, eval_set: EvalSet, metric: str) -> list[np.ndarray]:
    qids = eval_set.answered_query_ids()
    return [per_query(r.ranked_ids(), eval_set, qids, metric) for r in rankings]


def _index(values: list, prior: dict) -> int:
    """The position of the written default among `values` (the first candidate when the grid lacks it)."""
    matches = [i for i, v in enumerate(values) if all(v.get(k) == x for k, x in prior.items())]
    return matches[0] if matches else 0


def _decide(name: str, grid: list, values: list, rankings: list, eval_set: EvalSet, written: tuple, how: dict, start: float):
    """(the grid item chosen, its record): `choose` over each ranking's per-question scores on `eval_set`;
    `written`: (the settings of the written default, why it is the default); each candidate's prior is the
    benchmarks' for choice `name` (runner/infra/priors.py). `how`: metric, n_resamples, seed, evidence."""
    table = _table(rankings, eval_set, how["metric"])
    prior, why = written
    default = _index(values, prior)
    priors = priors_for(name, values, default)
    record = choose(values, table, default, why_default=why, priors=priors, prior_why=prior_why(name), **how)
    record["seconds"] = round(time.perf_counter() - start, 3)
    return grid[values.index(record["chosen"])], record


def _bm25_rankings(side: EvalSet, grid: list[Bm25Settings], metric: str) -> list[Ranking]:
    _, k = metric_k(metric)
    queries = [side.queries[q] for q in side.answered_query_ids()]
    return [Bm25(side.corpus, s).search(queries, k) for s in grid]


def choose_bm25(side: EvalSet, grid: list[Bm25Settings], prior: dict, how: dict):
    """(the tokenisation, its record): stopwords and stemming on `side`'s questions at the prior's k1 and b.
    `how`: metric, n_resamples, seed, evidence (`runner.infra.choosing.choose`'s)."""
    start = time.perf_counter()
    values = [{"stopwords": s.stopwords, "stemming": s.stemming} for s in grid]
    rankings = _bm25_rankings(side, grid, how["metric"])
    chosen, record = _decide("bm25", grid, values, rankings, side, (prior, BM25_PRIOR_WHY), how, start)
    return chosen, {**record, "language": chosen.language}


def choose_bm25_params(side: EvalSet, grid: list[Bm25Settings], prior: dict, how: dict):
    """(the settings with k1 and b, their record): BM25's k1 and b on `side`'s questions, the tokenisation fixed
    (each candidate is the whole of BM25's settings, so the record's `chosen` is what the retriever is built with)."""
    start = time.perf_counter()
    values = [s.as_dict() for s in grid]
    rankings = _bm25_rankings(side, grid, how["metric"])
    return _decide("bm25_params", grid, values, rankings, side, (prior, BM25_PARAMS_PRIOR_WHY), how, start)


def choose_fusion(dense: Ranking, lexical: Ranking, side: EvalSet, grid: list[Fusion], prior: dict, how: dict):
    """(the fusion, its record): mode, k and dense weight of the base model with BM25 on `side`'s questions.
    `dense` and `lexical`: each question's top max(k) from either side, in answered-question order."""
    start = time.perf_counter()
    rankings = [fuse(dense, lexical, f) for f in grid]
    return _decide("fusion_hybrid_base", grid, [f.as_dict() for f in grid], rankings, side, (prior, FUSION_PRIOR_WHY), how, start)


def choose_weight(dense: Ranking, lexical: Ranking, dev: EvalSet, base: Fusion, weights, how: dict):
    """(the fusion, its record) of the finetuned model's hybrid: the base hybrid's mode and k, its weight
    the base hybrid's unless a neighbour within WEIGHT_REACH has a higher expected score on the dev split."""
    start = time.perf_counter()
    if base.mode == "reciprocal_rerank":  # weights play no part: nothing to choose
        why = "the base hybrid's fusion: reciprocal_rerank ignores the weights"
        return base, {"chosen": base.as_dict(), "questions": 0, "decided_by": "prior", "reason": why}
    near = sorted(
        {round(float(w), 4) for w in weights if abs(w - base.dense_weight) <= WEIGHT_REACH + 1e-9} | {base.dense_weight}
    )
    grid = [Fusion(base.mode, base.top_k, w) for w in near]
    rankings = [fuse(dense, lexical, f) for f in grid]
    why = "the base hybrid's fusion, chosen before training on every training-side question"
    return _decide("fusion_hybrid_finetuned", grid, [f.as_dict() for f in grid], rankings, dev, (base.as_dict(), why), how, start)
