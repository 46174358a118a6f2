"""Stage `choices_before_training`: every choice that needs no trained model, made on every question the run
has before training (the training side: the training pairs' questions and the dev split's, over their
passages; `eval_sets.training_side`). No model has learned from any of them yet, so all of them count:
on a filings set that is 668 questions where the dev split alone had 100.

In order: the window (`base_model.max_seq_length: auto`), BM25's tokenisation, BM25's k1 and b, the base
model's hybrid (mode, k, weight). The base model encodes the training side once at the chosen window; the
dev split's ranking is cut out of that encoding (its scores are merging's alpha 0). The eval set is never
read. Each choice's record (runner/infra/choosing.py) lands in results.json `choices`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from runner.data.eval_set import EvalSet
from runner.stages.evaluate.baselines import Bm25, Bm25Settings, Fusion, bm25_grid, bm25_params_grid, fusion_grid
from runner.stages.evaluate.choices import _index, choose_bm25, choose_bm25_params, choose_fusion
from runner.stages.evaluate.schema import BM25_PARAMS_PRIOR, BM25_PRIOR, FUSION_PRIOR
from runner.stages.evaluate.scoring import encode_set, part_of, ranking_of, ranking_scores
from runner.stages.evaluate.seq_length import choose_max_seq_length


@dataclass
class BeforeTraining:
    """What the training side decided: the records, and the settings the rest of the run builds with."""

    records: dict
    max_seq_length: int | None = None  # None: the config's number stands
    bm25: Bm25Settings | None = None  # None: baselines off
    fusion: Fusion | None = None  # the base model's hybrid
    base_dev_scores: np.ndarray | None = None  # the base model's per-question dev scores (merging's alpha 0)


def evidence_of(side: EvalSet | None, dev: EvalSet | None) -> str:
    """Which questions decide the choices before training, in words, for the records."""
    if side is None:
        return "no question"
    n_dev = len(dev.answered_query_ids()) if dev is not None else 0
    n_train = len(side.answered_query_ids()) - n_dev
    return f"training side: {n_train} training-pair and {n_dev} dev questions over {len(side.corpus)} passages"


def choose_before_training(
    model,
    model_id: str,
    side: EvalSet | None,
    dev: EvalSet | None,
    *,
    window: bool,
    baselines,
    metric: str,
    k: int,
    batch_size: int,
    precision: str,
    n_resamples: int,
    seed: int,
    training_cost=None,
) -> BeforeTraining:
    """The stage. `window`: choose max_seq_length (auto); `baselines`: the evaluate.baselines config; `k`:
    how deep each side of a hybrid ranks; `training_cost`: window -> what the planned training would cost there
    (seq_length.affordable), or None. `model.max_seq_length` is left at the chosen window."""
    evidence = evidence_of(side, dev)
    out = BeforeTraining(records={})
    encoded = None
    if window:
        out.records["max_seq_length"], encoded = choose_max_seq_length(
            model, model_id, side, metric, k, batch_size, precision, n_resamples, seed, evidence, training_cost
        )
        out.max_seq_length = int(model.max_seq_length)
    if side is not None and encoded is None and (baselines.enabled or dev is not None):
        encoded = encode_set(model, model_id, side, batch_size, precision)
    if baselines.enabled:
        _baselines(out, encoded, side, baselines, metric, k, n_resamples, seed, evidence)
    if dev is not None and encoded is not None:
        out.base_dev_scores = ranking_scores(ranking_of(part_of(encoded, side, dev), k), dev, metric)
    return out


def _baselines(out: BeforeTraining, encoded, side, baselines, metric, k, n_resamples, seed, evidence) -> None:
    """BM25's tokenisation, then its k1 and b, then the base hybrid's fusion, each on the training side."""
    tokenisations = bm25_grid(baselines.language, baselines.stopwords, baselines.stemming)
    if side is None:  # nothing to decide on: the written defaults
        tokenisation = tokenisations[_index([s.as_dict() for s in tokenisations], BM25_PRIOR)]
        params = bm25_params_grid(tokenisation, baselines.k1, baselines.b)
        out.bm25 = params[_index([s.as_dict() for s in params], BM25_PARAMS_PRIOR)]
        fusions = fusion_grid(baselines.fusion_modes, baselines.top_k, baselines.dense_weights)
        out.fusion = fusions[_index([f.as_dict() for f in fusions], FUSION_PRIOR)]
        why = "no training-side question: the written default"
        for name, value in (("bm25", out.bm25.as_dict()), ("fusion_hybrid_base", out.fusion.as_dict())):
            out.records[name] = {"chosen": value, "questions": 0, "decided_by": "prior", "reason": why}
        return
    how = {"metric": metric, "n_resamples": n_resamples, "seed": seed, "evidence": evidence}
    tokenisation, out.records["bm25"] = choose_bm25(side, tokenisations, BM25_PRIOR, how)
    params = bm25_params_grid(tokenisation, baselines.k1, baselines.b)
    out.bm25, out.records["bm25_params"] = choose_bm25_params(side, params, BM25_PARAMS_PRIOR, how)
    start = time.perf_counter()
    lexical = Bm25(side.corpus, out.bm25).search([side.queries[q] for q in side.answered_query_ids()], k)
    fusions = fusion_grid(baselines.fusion_modes, baselines.top_k, baselines.dense_weights)
    out.fusion, record = choose_fusion(ranking_of(encoded, k), lexical, side, fusions, FUSION_PRIOR, how)
    out.records["fusion_hybrid_base"] = {**record, "seconds": round(time.perf_counter() - start, 3)}


def to_json(before: BeforeTraining) -> dict:
    """The stage's cache entry."""
    return {
        "records": before.records,
        "max_seq_length": before.max_seq_length,
        "bm25": before.bm25.as_dict() if before.bm25 else None,
        "fusion": before.fusion.as_dict() if before.fusion else None,
        "arrays": {"base_dev_scores": before.base_dev_scores} if before.base_dev_scores is not None else {},
    }


def from_json(data: dict) -> BeforeTraining:
    return BeforeTraining(
        records=data["records"],
        max_seq_length=data["max_seq_length"],
        bm25=Bm25Settings(**data["bm25"]) if data["bm25"] else None,
        fusion=Fusion(**data["fusion"]) if data["fusion"] else None,
        base_dev_scores=np.asarray(data["arrays"]["base_dev_scores"]) if "base_dev_scores" in data.get("arrays", {}) else None,
    )
