"""`base_model.max_seq_length: auto`: how many word pieces of a passage the model reads, chosen on the dev split.

A longer window sees more of a long passage and costs time: encoding, and training most of all (about
linear in the length). So the window grows only on evidence. Candidates run from the model's own
setting (what it was trained with: 256 for all-MiniLM-L6-v2) up to its position limit, in steps of
128, as far as the training side's passages call for: up to the first step that holds 95% of them
(the eval set is never read). Passages that already fit leave one candidate, and nothing is encoded.
Otherwise the base model ranks the dev split at each length, and the best dev score wins when it beats
the model's own by at least MIN_GAIN (a tie goes to the shorter). Not a significance test: a dev split
of a hundred questions rarely makes a +0.016 gain "clear", and that gain is what turned into +0.066 after
finetuning on long filings, while on SciFact the longer window it picks costs nothing measurable; the
time budget bounds what the longer window costs in training. The paired 95% interval of each candidate
against the own length is recorded beside its score. The record (every candidate's dev score and share of passages
cut, the winner, the seconds) goes to results.json `choices.max_seq_length`.
"""

from __future__ import annotations

import math
import time

import numpy as np

from runner.infra.models import word_pieces

STEP = 128  # word pieces between candidates
COVER = 0.95  # the longest candidate holds this share of the training side's passages
MIN_GAIN = 0.005  # dev nDCG a longer window must add to the own one's: less is a hair, not worth the time


def check(value, key: str = "base_model.max_seq_length") -> list[str]:
    """Problems with a max_seq_length setting (the validator's), as sentences."""
    if value is None or value == "auto":
        return []
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return [
            f"{key}={value!r} is not a length; give a positive number of word pieces (e.g. 256), auto (chosen "
            "on the dev split from the passages' lengths) or null (the model's own setting)"
        ]
    return []


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


def choice_to_json(chosen: tuple) -> dict:
    """The cache entry of the `max_seq_length` stage: the record (the dev ranking is not kept)."""
    return chosen[0]


def choice_from_json(record: dict) -> tuple:
    """(the record, no dev ranking): a cache hit scores the dev split again where a later choice needs it."""
    return record, None


def choose_max_seq_length(
    model,
    model_id: str,
    dev,
    passages: list[str],
    metric: str,
    k: int,
    batch_size: int,
    precision: str,
    n_resamples: int,
    seed: int,
) -> tuple[dict, object]:
    """(the record of the choice, the base model's dev ranking (top k) at the winner, or None when
    nothing was encoded); `model.max_seq_length` is left at the winner."""
    start = time.perf_counter()
    own = int(model.max_seq_length)
    lengths = word_pieces(model, passages)
    limit = position_limit(model)
    cands = candidates(own, limit, lengths)
    record = _record(metric, own, lengths, limit, cands)
    if len(cands) == 1 or dev is None:
        record.update(chosen=own, dev=None, seconds=round(time.perf_counter() - start, 3), reason=_kept_own_reason(own, cands))
        return record, None
    rankings, scores = _dev_at_each_length(model, model_id, dev, cands, own, metric, k, batch_size, precision)
    _score_candidates(record["candidates"], scores, own, n_resamples, seed)
    chosen, reason = _pick(record["candidates"], own)
    model.max_seq_length = chosen
    record.update(
        chosen=chosen, dev=round(float(scores[chosen].mean()), 5), seconds=round(time.perf_counter() - start, 3), reason=reason
    )
    return record, rankings[chosen]


def _record(metric: str, own: int, lengths: np.ndarray, limit: int, cands: list[int]) -> dict:
    """The record before any dev scoring: the passages' lengths and each candidate's share of them cut."""
    lengths_of = {
        "passages": len(lengths),
        "p50": int(np.median(lengths)) if len(lengths) else 0,
        "p95": int(np.quantile(lengths, COVER)) if len(lengths) else 0,
        "limit": limit,
    }
    return {
        "metric": metric,
        "own": own,
        "passage_lengths": lengths_of,
        "candidates": [
            {"max_seq_length": n, "passages_cut": round(float((lengths > n).mean()), 4) if len(lengths) else 0.0} for n in cands
        ],
    }


def _kept_own_reason(own: int, cands: list[int]) -> str:
    if len(cands) == 1:
        return f"the model's own {own}: it holds {100 * COVER:.0f}% of the training passages"
    return f"the model's own {own}: no dev split to choose on"


def _dev_at_each_length(
    model, model_id: str, dev, cands: list[int], own: int, metric: str, k: int, batch_size: int, precision: str
):
    """({length: the base model's dev ranking}, {length: per-query dev scores}); the model's
    length is put back to `own` afterwards."""
    from runner.stages.evaluate.scoring import dev_scores

    scores, rankings = {}, {}
    try:
        for n in cands:
            model.max_seq_length = n
            rankings[n], scores[n] = dev_scores(model, f"{model_id}@{n}", dev, metric, k, batch_size, precision)
    finally:
        model.max_seq_length = own
    return rankings, scores


def _score_candidates(cands: list[dict], scores: dict, own: int, n_resamples: int, seed: int) -> None:
    """Adds each candidate's mean dev score and, but for the model's own, the paired 95% interval
    of its difference from the own length's."""
    from runner.infra.metrics import paired_bootstrap_ci

    for c in cands:
        c["dev"] = round(float(scores[c["max_seq_length"]].mean()), 5)
        if c["max_seq_length"] != own:
            low, high = paired_bootstrap_ci(scores[own], scores[c["max_seq_length"]], n_resamples, seed)
            c["ci95_vs_own"] = [round(low, 5), round(high, 5)]


def _pick(cands: list[dict], own: int) -> tuple[int, str]:
    """(the winner, why): the candidate with the best dev score when it beats the model's own by at
    least MIN_GAIN (a tie goes to the shorter), else the model's own."""
    own_dev = cands[0]["dev"]
    ahead = [c for c in cands[1:] if c["dev"] - own_dev >= MIN_GAIN - 1e-9]
    best = max(ahead, key=lambda c: (c["dev"], -c["max_seq_length"]), default=None)
    if best:
        chosen = best["max_seq_length"]
        low, high = best["ci95_vs_own"]
        reason = (
            f"{chosen} scores {best['dev']:.4f} on dev, the best, {best['dev'] - own_dev:+.4f} over the model's own {own} "
            f"({own_dev:.4f}; paired 95% interval [{low:+.4f}, {high:+.4f}]; a longer window needs +{MIN_GAIN})"
        )
        return chosen, reason
    reason = f"the model's own {own} ({own_dev:.4f} on dev); no longer window adds {MIN_GAIN} or more: " + "; ".join(
        f"{c['max_seq_length']} {c['dev']:.4f} [{c['ci95_vs_own'][0]:+.4f}, {c['ci95_vs_own'][1]:+.4f}]" for c in cands[1:]
    )
    return own, reason
