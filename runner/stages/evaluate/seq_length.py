"""`base_model.max_seq_length: auto`: how many word pieces of a passage the model reads, chosen on
every question the run has before training (the training side: training pairs and dev split).

A longer window sees more of a long passage; it costs time, in training most of all (about linear in the
length), which the time budget bounds. Candidates run from the model's own setting (what it was trained
with: 256 for all-MiniLM-L6-v2) up to its position limit, in steps of 128, as far as the training side's
passages call for: up to the first step that holds 95% of them (the eval set is never read). Passages
that already fit leave one candidate, and nothing is encoded for it.

Otherwise the base model ranks the training side's questions at each length and `runner.infra.choosing`
decides (the highest expected score: this evidence weighed against the benchmarks' prior of each window
against the longest). The written default is the longest candidate, the window that reads (nearly) every
passage whole (measured: on the filings set 256 / 384 / 512 score 0.6389 / 0.6405 / 0.6532 on all 668
training-side questions; on the long benchmark 512 is +0.048 on dev; nowhere did a shorter window score
clearly better).

Unless the window costs what training needs more. Where the finetune method plans mined hard negatives
within a time budget (`cost`: the trainer's probe at a window), the default is the longest window whose
planned training, negatives included, fits the budget, and every longer window carries the negatives' worth
as a known cost in its expected score (runner.infra.priors.NEGATIVE_WORTH: on SciFact the three windows tie
on 809 questions, and 512 once cost the negative there, docs/record.md). Nothing is probed where the longest
window is expected to beat every shorter one by more than that cost, or where it fits; where none fits, the
longest stays (the negatives go at any window).

The record (every candidate's score, share of passages cut and, where probed, projected training seconds;
the evidence; the winner) goes to results.json `choices.max_seq_length`.
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np

from runner.infra.choosing import choose, estimates
from runner.infra.priors import NEGATIVE_WORTH, priors_for
from runner.infra.priors import why as prior_why
from runner.infra.models import word_pieces
from runner.stages.evaluate.choices import per_query
from runner.stages.evaluate.scoring import encode_set, ranking_of

STEP = 128  # word pieces between candidates
COVER = 0.95  # the longest candidate holds this share of the training side's passages


# models whose position ids start after the padding index: two of their positions are never a token's
OFFSET_POSITIONS = frozenset({"roberta", "xlm-roberta", "camembert", "mpnet", "longformer", "data2vec-text"})


def position_limit(model) -> int:
    """The longest input the model can read: its position table (less the two offset positions of
    RoBERTa-style models). sentence-transformers has already set the tokenizer's limit to the model's
    own max_seq_length, so the tokenizer cannot say."""
    config = getattr(getattr(model[0], "auto_model", None), "config", None)
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return int(model.max_seq_length)
    return positions - 2 if getattr(config, "model_type", "") in OFFSET_POSITIONS else positions


def candidates(own: int, limit: int, lengths: np.ndarray) -> list[int]:
    """The model's own length, then steps of STEP up to the limit, as far as COVER of `lengths` needs."""
    need = int(math.ceil(np.quantile(lengths, COVER))) if len(lengths) else own
    out = [own]
    while out[-1] < min(need, limit):
        out.append(min(out[-1] + STEP, limit))
    return out


WHY_DEFAULT = (
    "the longest candidate reads (nearly) every training-side passage whole; on every benchmark measured a "
    "shorter window never scored clearly better (docs/auto.md)"
)


def choose_max_seq_length(
    model,
    model_id: str,
    side,
    metric: str,
    k: int,
    batch_size: int,
    precision: str,
    n_resamples: int,
    seed: int,
    evidence: str = "",
    cost: Callable[[int], dict] | None = None,
) -> tuple[dict, object]:
    """(the record of the choice, the base model's encoding of `side` at the winner: (CorpusIndex, query
    embeddings), or None when nothing was encoded); `model.max_seq_length` is left at the winner.
    `side`: the training side's questions and passages (`eval_sets.training_side`), or None; `cost`: window ->
    the planned training's projection there (`trainer.training_cost`: `training_s_estimate`, `fits`), or None
    where training buys nothing with the time (no budget, no mined negatives, no training)."""
    start = time.perf_counter()
    own = int(model.max_seq_length)
    lengths = word_pieces(model, sorted(set(side.corpus.values())) if side is not None else [])
    limit = position_limit(model)
    cands = candidates(own, limit, lengths)
    cut = [{"passages_cut": round(float((lengths > n).mean()), 4) if len(lengths) else 0.0} for n in cands]
    info = {"own": own, "passage_lengths": _lengths(lengths, limit)}
    if len(cands) == 1 or side is None:
        record = _nothing_to_choose(own, cands, cut, metric, no_side=side is None)
        return {**record, **info, "seconds": round(time.perf_counter() - start, 3)}, None
    encoded, table = _at_each_length(model, model_id, side, cands, own, metric, k, batch_size, precision)
    default, why, costs = affordable(cands, table, cost)
    for c in costs:
        cut[cands.index(c["window"])]["training_s_estimate"] = c.get("training_s_estimate")
    record = choose(
        cands,
        table,
        default,
        metric=metric,
        evidence=evidence,
        why_default=why,
        priors=priors_for("max_seq_length", cands, default),
        offsets=negatives_lost(cands, default),
        prior_why=prior_why("max_seq_length")
        + (
            f"; a window longer than {cands[default]} loses the mined negative, worth {NEGATIVE_WORTH} (docs/record.md)"
            if default != len(cands) - 1
            else ""
        ),
        n_resamples=n_resamples,
        seed=seed,
        extra=cut,
    )
    if costs:
        record["training_cost"] = costs
        if default != len(cands) - 1:
            record["reason"] += f"; default {cands[default]}: {why}"
    model.max_seq_length = record["chosen"]
    return {**record, **info, "seconds": round(time.perf_counter() - start, 3)}, encoded[record["chosen"]]


def _nothing_to_choose(own: int, cands: list[int], cut: list[dict], metric: str, no_side: bool) -> dict:
    """The record when the model's own window stands without a question asked."""
    reason = (
        f"the model's own {own}: no training-side question to choose on"
        if no_side and len(cands) > 1
        else f"the model's own {own}: it holds {100 * COVER:.0f}% of the training side's passages"
    )
    return {
        "metric": metric,
        "questions": 0,
        "candidates": [{"value": n, **c} for n, c in zip(cands, cut)],
        "chosen": own,
        "decided_by": "prior",
        "reason": reason,
    }


def negatives_lost(cands: list[int], default: int) -> list[float]:
    """Each window's known cost against `default`: where the default is shorter than the longest because only
    it fits the time budget with the mined negatives, every longer window loses the negatives' worth."""
    return [-NEGATIVE_WORTH if i > default else 0.0 for i in range(len(cands))]


def affordable(cands: list[int], table: list, cost) -> tuple[int, str, list[dict]]:
    """(the default's index, why, the probes' records): the longest candidate, or, where `cost` says its
    planned training does not fit the budget, the longest one whose training does. Probes run from the longest
    down and stop at the first that fits; none runs where the longest is expected to win even at the cost of
    the negatives (the choice could not move)."""
    longest = len(cands) - 1
    if cost is None or _wins_anyway(table, cands):
        return longest, WHY_DEFAULT, []
    costs = []
    for i in range(longest, -1, -1):
        costs.append(cost(cands[i]))
        if costs[-1]["fits"]:
            break
    if not costs[-1]["fits"] or len(costs) == 1:  # the longest fits, or none does (the negatives go at any window)
        return longest, WHY_DEFAULT + ("; no window's planned training fits the time budget" if len(costs) > 1 else ""), costs
    fit, over = costs[-1], costs[0]
    why = (
        f"the longest window whose planned training fits the time budget with its mined negatives: "
        f"{fit['window']} projects {fit['training_s_estimate']:.0f} s of {fit['budget_s']:.0f} s, {over['window']} "
        f"{over['training_s_estimate']:.0f} s; a longer window is expected to lose the negatives' worth"
    )
    return cands.index(fit["window"]), why, costs


def _wins_anyway(table: list, cands: list[int]) -> bool:
    """Whether the longest window's expected score beats every other's by more than the mined negative is worth:
    then it is chosen whatever the budget says, and no probe is needed."""
    longest = len(cands) - 1
    est = estimates(np.asarray(table, dtype=np.float64), longest, priors_for("max_seq_length", cands, longest))
    return bool(all(est["expected"][i] < -NEGATIVE_WORTH for i in range(longest)))


def _lengths(lengths: np.ndarray, limit: int) -> dict:
    return {
        "passages": len(lengths),
        "p50": int(np.median(lengths)) if len(lengths) else 0,
        "p95": int(np.quantile(lengths, COVER)) if len(lengths) else 0,
        "limit": limit,
    }


def _at_each_length(model, model_id: str, side, cands: list[int], own: int, metric: str, k: int, batch_size: int, precision: str):
    """({length: (CorpusIndex, query embeddings) of `side`}, [per-question scores at each length]); the
    model's length is put back to `own` afterwards."""
    encoded, table = {}, []
    qids = side.answered_query_ids()
    try:
        for n in cands:
            model.max_seq_length = n
            encoded[n] = encode_set(model, f"{model_id}@{n}", side, batch_size, precision)
            table.append(per_query(ranking_of(encoded[n], k).ranked_ids(), side, qids, metric))
    finally:
        model.max_seq_length = own
    return encoded, table
