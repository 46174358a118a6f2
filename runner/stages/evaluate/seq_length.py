"""`base_model.max_seq_length: auto`: how many word pieces of a passage the model reads, chosen on
every question the run has before training (the training side: training pairs and dev split).

A longer window sees more of a long passage; it costs time, in training most of all (about linear in the
length), which the time budget bounds. Candidates run from the model's own setting (what it was trained
with: 256 for all-MiniLM-L6-v2) up to its position limit, in steps of 128, as far as the training side's
passages call for: up to the first step that holds 95% of them (the eval set is never read). Passages
that already fit leave one candidate, and nothing is encoded for it.

Otherwise the base model ranks the training side's questions at each length and `runner.infra.choosing`
decides: the written default is the longest candidate, the window that reads (nearly) every passage whole
(measured: on the filings set 256 / 384 / 512 score 0.6389 / 0.6405 / 0.6532 on all 668 training-side
questions; on SciFact 512 ties 384 and beats 256 by +0.009; on the long benchmark 512 is +0.048 on dev;
nowhere did a shorter window score clearly better). A shorter one wins only where it is clearly better.
The record (every candidate's score and share of passages cut, the evidence, the winner) goes to
results.json `choices.max_seq_length`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from runner.infra.models import word_pieces

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
) -> tuple[dict, object]:
    """(the record of the choice, the base model's encoding of `side` at the winner: (CorpusIndex, query
    embeddings), or None when nothing was encoded); `model.max_seq_length` is left at the winner.
    `side`: the training side's questions and passages (`eval_sets.training_side`), or None."""
    from runner.infra.choosing import choose

    start = time.perf_counter()
    own = int(model.max_seq_length)
    lengths = word_pieces(model, sorted(set(side.corpus.values())) if side is not None else [])
    limit = position_limit(model)
    cands = candidates(own, limit, lengths)
    cut = [{"passages_cut": round(float((lengths > n).mean()), 4) if len(lengths) else 0.0} for n in cands]
    info = {"own": own, "passage_lengths": _lengths(lengths, limit)}
    if len(cands) == 1 or side is None:
        reason = (
            f"the model's own {own}: it holds {100 * COVER:.0f}% of the training side's passages"
            if len(cands) == 1
            else f"the model's own {own}: no training-side question to choose on"
        )
        record = {
            "metric": metric,
            "questions": 0,
            "candidates": [{"value": n, **c} for n, c in zip(cands, cut)],
            "chosen": own,
            "decided_by": "default",
            "reason": reason,
        }
        return {**record, **info, "seconds": round(time.perf_counter() - start, 3)}, None
    encoded, table = _at_each_length(model, model_id, side, cands, own, metric, k, batch_size, precision)
    record = choose(
        cands,
        table,
        len(cands) - 1,
        metric=metric,
        evidence=evidence,
        why_default=WHY_DEFAULT,
        n_resamples=n_resamples,
        seed=seed,
        extra=cut,
    )
    model.max_seq_length = record["chosen"]
    return {**record, **info, "seconds": round(time.perf_counter() - start, 3)}, encoded[record["chosen"]]


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
    from runner.stages.evaluate.choices import per_query
    from runner.stages.evaluate.scoring import encode_set, ranking_of

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
