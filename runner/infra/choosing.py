"""How a run makes a choice from data, and the record that shows the evidence.

Each choice (a window, BM25's tokenisation, a fusion, an epoch, a merge weight) has candidates, a written
default (its prior, measured across the project's benchmarks and stated in the stage's schema next to the
knob) and a table of evidence: one score per candidate per question, the same questions for every candidate.
The rule, the same for every choice:

  the best-scoring candidate replaces the default only when it beats it clearly: the paired 95% BCa
  interval of (best - default) over the questions lies above 0. Otherwise the default stays.

So a choice moves away from its default on evidence, never on whichever candidate the noise favoured: a
hair's breadth on a hundred questions is how the dev split once picked the BM25 tokenisation and the window
that all 668 training-side questions of a filings set rank worst.

The record (results.json `choices.<name>`, the console's choices table, W&B `choices/<name>/...`) holds: how
many questions decided it and which, every candidate's score, the best and the runner-up with the margin
between them and its paired interval, the stability (the share of bootstrap resamples of the questions in
which the best candidate still scores best), the default and why, what was chosen and whether the evidence
or the default decided it.
"""

from __future__ import annotations

import numpy as np

from runner.infra.metrics import paired_bootstrap_ci

STABILITY_RESAMPLES = 2000  # the share's standard error stays under 0.012 at any stability
TIE = 1e-12  # scores closer than this are equal: the earlier candidate in preference order wins


def preference(n: int, default: int) -> list[int]:
    """The order ties are broken in: the default first, then the candidates as listed."""
    return [default] + [i for i in range(n) if i != default]


def best_of(means: np.ndarray, order: list[int]) -> int:
    """The candidate with the highest mean; a tie goes to the earlier one in `order`."""
    best = order[0]
    for i in order[1:]:
        if means[i] > means[best] + TIE:
            best = i
    return best


def stability(table: np.ndarray, winner: int, default: int, n_resamples: int = STABILITY_RESAMPLES, seed: int = 0) -> float:
    """The share of bootstrap resamples of the questions (columns of `table`, drawn with replacement) in
    which `winner` is still the best candidate, ties broken as on the full table (the default first)."""
    table = np.asarray(table, dtype=np.float64)
    n_cands, n_q = table.shape
    if n_cands == 1:
        return 1.0
    if n_q == 0:
        return 0.0
    order = preference(n_cands, default)
    # rank of each candidate in tie order: among equal means the lowest rank wins
    rank = np.empty(n_cands, dtype=np.int64)
    rank[order] = np.arange(n_cands)
    rng = np.random.default_rng(seed)
    wins = 0
    for start in range(0, n_resamples, 500):
        size = min(500, n_resamples - start)
        counts = rng.multinomial(n_q, np.full(n_q, 1.0 / n_q), size=size).astype(np.float64)  # [size, Q]
        means = counts @ table.T / n_q  # [size, C]
        top = means.max(axis=1, keepdims=True)
        tied = means >= top - TIE
        best = np.where(tied, rank[None, :], n_cands).argmin(axis=1)  # the earliest tied candidate's column
        wins += int((best == winner).sum())
    return wins / n_resamples


def choose(
    values: list,
    table,
    default: int,
    *,
    metric: str,
    evidence: str,
    why_default: str,
    n_resamples: int = 10_000,
    seed: int = 0,
    extra: list[dict] | None = None,
) -> dict:
    """The record of a choice among `values` (JSON values: a number or a dict of settings), from `table`
    (one row of per-question scores per value); `default`: the index of the written default.

    `evidence` says which questions these are (for the record: "training side: ..."), `why_default` where
    the default comes from; `extra`: more fields per candidate (e.g. the share of passages a window cuts)."""
    table = np.asarray(table, dtype=np.float64).reshape(len(values), -1)
    n_q = table.shape[1]
    means = table.mean(axis=1) if n_q else np.zeros(len(values))
    order = preference(len(values), default)
    best = best_of(means, order)
    runner_up = best_of(means, [i for i in order if i != best]) if len(values) > 1 else None
    candidates = [
        {"value": v, "score": round(float(m), 5), **((extra or [{}] * len(values))[i])}
        for i, (v, m) in enumerate(zip(values, means))
    ]
    record = {
        "metric": metric,
        "questions": n_q,
        "evidence": evidence,
        "candidates": candidates,
        "default": values[default],
        "default_why": why_default,
        "best": values[best],
        "stability": round(stability(table, best, default, seed=seed), 4) if n_q else None,
    }
    if runner_up is not None and n_q:
        low, high = paired_bootstrap_ci(table[runner_up], table[best], n_resamples, seed)
        record.update(
            runner_up=values[runner_up],
            margin=round(float(means[best] - means[runner_up]), 5),
            margin_ci95=[round(low, 5), round(high, 5)],
        )
    clear = False
    if best != default and n_q:
        low, high = paired_bootstrap_ci(table[default], table[best], n_resamples, seed)
        record["vs_default"] = {"delta": round(float(means[best] - means[default]), 5), "ci95": [round(low, 5), round(high, 5)]}
        clear = low > 0
    chosen = best if (best == default or clear) else default
    record["chosen"] = values[chosen]
    # the evidence decided when it moved the choice off the default, or when the default beat every other
    # candidate clearly; otherwise the default stands for want of evidence (ties included)
    default_clearly_best = best == default and record.get("margin_ci95", [0.0])[0] > 0
    record["decided_by"] = "evidence" if clear or default_clearly_best or len(values) == 1 else "default"
    record["reason"] = _reason(values, means, best, default, chosen, record, n_q, metric, evidence)
    return record


def _label(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if k != "language")
    return f"{value:g}" if isinstance(value, float) else str(value)


def _reason(values, means, best, default, chosen, record, n_q, metric, evidence) -> str:
    if not n_q:
        return f"the default, {_label(values[default])}: no question to decide on"
    head = f"{_label(values[chosen])} ({metric} {means[chosen]:.4f} on {n_q} questions, {evidence}"
    if len(values) == 1:
        return head + "; the only candidate)"
    stab = f"stability {record['stability']:.0%}"
    if best == default:
        margin = f"{record['margin']:+.4f} [{record['margin_ci95'][0]:+.4f}, {record['margin_ci95'][1]:+.4f}]"
        how = "clearly" if record["margin_ci95"][0] > 0 else "not clearly"
        return head + f"): the default scores best, {how}: {margin} over {_label(record['runner_up'])}; {stab}"
    vs = record["vs_default"]
    gap = f"{vs['delta']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]"
    if chosen == best:
        return head + f"): clearly better than the default {_label(values[default])}, {gap}; {stab}"
    return head + f"): the default; the best, {_label(values[best])} ({means[best]:.4f}), is not clearly better, {gap}; {stab}"


def chosen_value(record: dict):
    """What a choice record chose (`chosen`; older records name it `chosen_alpha`)."""
    return record.get("chosen", record.get("chosen_alpha"))
