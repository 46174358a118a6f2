"""How a run makes a choice from data, and the record that shows the evidence.

Each choice (a window, BM25's tokenisation and its k1 and b, a fusion, an epoch, a merge weight) has
candidates, a written default, a prior and a table of evidence: one score per candidate per question, the
same questions for every candidate. The rule, the same for every choice:

  take the candidate with the highest expected score. For each candidate the evidence's estimate of its
  difference from the default (the mean per-question difference, with standard error se) and the prior's
  (the mean difference across the project's benchmarks, spread tau from one data set to the next) are
  combined in proportion to their precision (a normal-normal empirical Bayes posterior mean):

      expected difference = w * evidence + (1 - w) * prior mean,   w = tau^2 / (tau^2 + se^2)

  and the candidate whose expected difference is highest is chosen (the default's is 0; ties go to the
  default, then to the earlier candidate).

A choice is not a claim, so its loss is symmetric: keeping a candidate 0.01 worse costs the user what
missing one 0.01 better costs. The rule that serves the user is the one with the highest expected score,
not a significance test against the default (the rule until 2026-12-07, which kept LlamaIndex's BM25
tokenisation against 668 filings questions that preferred another and cost the verdict 0.011). With many
questions se is small and the evidence decides; with a hundred dev questions and a prior that holds across
benchmarks (a small tau) the prior does. A candidate without a measured prior (a grid the user changed) is
judged on the evidence alone. The rule was chosen by its regret on the benchmarks' eval sets, against the
test and the evidence's argmax (`bench/regret.py`; docs/record.md); the priors are measured by
`bench/priors.py` on the benchmarks' training sides and dev splits, never on an eval set
(runner/infra/priors.py).

The record (results.json `choices.<name>`, the console's choices table, W&B `choices/<name>/...`) holds: how
many questions decided it and which, every candidate's score on the evidence, its prior and its expected
score, the best on the evidence and the runner-up with the margin between them and its paired interval,
the stability (the share of bootstrap resamples of the questions in which the rule still picks the same
candidate), the default and why, what was chosen and what decided it: `evidence` (the evidence's best,
against the prior's), `prior` (the prior's best, against the evidence's) or `both` (they agree, or their
combination picked a third).
"""

from __future__ import annotations

import math

import numpy as np

from runner.infra.metrics import paired_bootstrap_ci

STABILITY_RESAMPLES = 2000  # the share's standard error stays under 0.012 at any stability
TIE = 1e-12  # estimates closer than this are equal: the earlier candidate in preference order wins
RULE = "the highest expected score: the evidence and the prior, each weighted by its precision"


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


def prior_arrays(priors, n: int, default: int) -> tuple[np.ndarray, np.ndarray]:
    """(prior means, prior spreads) of each candidate's difference from the default; a candidate with no
    prior (None) gets spread inf (the evidence alone), the default mean 0 and spread 0."""
    mean, sd = np.zeros(n), np.full(n, np.inf)
    for i, p in enumerate(priors or [None] * n):
        if p is not None and i != default:
            mean[i], sd[i] = float(p[0]), float(p[1])
    sd[default] = 0.0
    return mean, sd


def _combine(delta, se, mean, sd):
    """The expected difference: w * delta + (1 - w) * mean, w = sd^2 / (sd^2 + se^2); broadcasts. No prior
    (sd inf) or exact evidence (se 0): the evidence; no evidence (se inf): the prior."""
    with np.errstate(invalid="ignore", divide="ignore"):
        w = np.where(np.isinf(sd), 1.0, np.where(se == 0, 1.0, sd**2 / (sd**2 + se**2)))
    w = np.where(np.isinf(se) & ~np.isinf(sd), 0.0, w)
    return w * delta + (1 - w) * mean, w


def estimates(table, default: int, priors=None, offsets=None) -> dict[str, np.ndarray]:
    """Per candidate: `delta` (the evidence's mean difference from the default), `se` (its standard error),
    `weight` (the evidence's share), `expected` (the combined difference, plus its known `offsets`) and the
    prior's `mean`, `sd`. `table`: [candidates, questions]; `priors`: per candidate (mean, sd) of its
    difference, or None; `offsets`: per candidate, a known cost or gain the scores do not show, or None."""
    table = np.asarray(table, dtype=np.float64)
    n_cands, n_q = table.shape
    mean, sd = prior_arrays(priors, n_cands, default)
    diff = table - table[default]
    delta = diff.mean(axis=1) if n_q else np.zeros(n_cands)
    se = diff.std(axis=1, ddof=1) / math.sqrt(n_q) if n_q > 1 else np.full(n_cands, np.inf)
    se[default] = 0.0
    if n_q == 1:
        se[np.isinf(sd)] = 0.0  # one question and no prior: that question is all there is
    expected, weight = _combine(delta, se, mean, sd)
    expected = expected + _offsets(offsets, n_cands, default)
    expected[default] = 0.0
    return {"delta": delta, "se": se, "weight": weight, "expected": expected, "mean": mean, "sd": sd}


def _offsets(offsets, n: int, default: int) -> np.ndarray:
    out = np.zeros(n) if offsets is None else np.asarray(offsets, dtype=np.float64).copy()
    out[default] = 0.0
    return out


def pick(expected: np.ndarray, default: int) -> int:
    """The rule: the highest expected difference; a tie goes to the default, then in listed order."""
    return best_of(np.asarray(expected), preference(len(expected), default))


def stability(
    table: np.ndarray,
    winner: int,
    default: int,
    priors=None,
    offsets=None,
    n_resamples: int = STABILITY_RESAMPLES,
    seed: int = 0,
) -> float:
    """The share of bootstrap resamples of the questions (columns of `table`, drawn with replacement) in
    which the rule still picks `winner`, ties broken as on the full table (the default first). Without
    priors the rule picks the best mean."""
    table = np.asarray(table, dtype=np.float64)
    n_cands, n_q = table.shape
    if n_cands == 1:
        return 1.0
    if n_q == 0:
        return 0.0
    order = preference(n_cands, default)
    rank = np.empty(n_cands, dtype=np.int64)  # rank of each candidate in tie order: among equals the lowest wins
    rank[order] = np.arange(n_cands)
    mean, sd = prior_arrays(priors, n_cands, default)
    diff = table - table[default]
    shift = _offsets(offsets, n_cands, default)
    rng = np.random.default_rng(seed)
    wins = 0
    for start in range(0, n_resamples, 500):
        size = min(500, n_resamples - start)
        counts = rng.multinomial(n_q, np.full(n_q, 1.0 / n_q), size=size).astype(np.float64)  # [size, Q]
        delta = counts @ diff.T / n_q  # [size, C]
        if n_q > 1:
            var = np.maximum(counts @ (diff**2).T / n_q - delta**2, 0.0) * n_q / (n_q - 1)
            se = np.sqrt(var / n_q)
        else:
            se = np.where(np.isinf(sd), 0.0, np.inf)[None, :].repeat(size, 0)
        expected, _ = _combine(delta, se, mean[None, :], sd[None, :])
        expected = expected + shift[None, :]
        expected[:, default] = 0.0
        top = expected.max(axis=1, keepdims=True)
        tied = expected >= top - TIE
        best = np.where(tied, rank[None, :], n_cands).argmin(axis=1)  # the earliest tied candidate's column
        wins += int((best == winner).sum())
    return wins / n_resamples


def decided_by(chosen: int, evidence_best: int, prior_best: int, has_prior: bool, n_q: int) -> str:
    """`evidence`, `prior` or `both` (they agree, or the combination picked a candidate neither would)."""
    if not n_q:
        return "prior"
    if not has_prior:
        return "evidence"
    if chosen == evidence_best and chosen != prior_best:
        return "evidence"
    if chosen == prior_best and chosen != evidence_best:
        return "prior"
    return "both"


def choose(
    values: list,
    table,
    default: int,
    *,
    metric: str,
    evidence: str,
    why_default: str,
    priors=None,
    prior_why: str = "",
    offsets=None,
    n_resamples: int = 10_000,
    seed: int = 0,
    extra: list[dict] | None = None,
) -> dict:
    """The record of a choice among `values` (JSON values: a number or a dict of settings), from `table`
    (one row of per-question scores per value); `default`: the index of the written default.

    `priors`: per value, (mean, spread) of its difference from the default across the benchmarks
    (runner/infra/priors.py), or None where none was measured; `prior_why` says where they come from;
    `offsets`: per value, a known cost (negative) or gain the scores do not show, added to its expected score.
    `evidence` says which questions these are (for the record: "training side: ..."), `why_default` where
    the default comes from; `extra`: more fields per candidate (e.g. the share of passages a window cuts)."""
    table = np.asarray(table, dtype=np.float64).reshape(len(values), -1)
    n_q = table.shape[1]
    means = table.mean(axis=1) if n_q else np.zeros(len(values))
    order = preference(len(values), default)
    est = estimates(table, default, priors, offsets)
    has_prior = bool(np.isfinite(est["sd"][np.arange(len(values)) != default]).any())
    best = best_of(means, order)  # the evidence's best
    prior_best = pick(est["mean"] + _offsets(offsets, len(values), default), default)
    chosen = pick(est["expected"], default) if n_q else prior_best
    runner_up = best_of(means, [i for i in order if i != best]) if len(values) > 1 else None
    candidates = []
    for i, (v, m) in enumerate(zip(values, means)):
        c = {"value": v, "score": round(float(m), 5), **((extra or [{}] * len(values))[i])}
        if i != default and np.isfinite(est["sd"][i]):
            c["prior"] = {"mean": round(float(est["mean"][i]), 5), "sd": round(float(est["sd"][i]), 5)}
        if n_q:
            c["expected"] = round(float(means[default] + est["expected"][i]), 5)
            c["prior_shift"] = round(float(est["expected"][i] - est["delta"][i]), 5)
        candidates.append(c)
    record = {
        "metric": metric,
        "questions": n_q,
        "evidence": evidence,
        "rule": RULE,
        "candidates": candidates,
        "default": values[default],
        "default_why": why_default,
        "prior_why": prior_why if has_prior else "no prior measured for these candidates: the evidence alone",
        "best": values[best],
        "prior_best": values[prior_best],
        "stability": round(stability(table, chosen, default, priors, offsets, seed=seed), 4) if n_q else None,
    }
    if runner_up is not None and n_q:
        low, high = paired_bootstrap_ci(table[runner_up], table[best], n_resamples, seed)
        record.update(
            runner_up=values[runner_up],
            margin=round(float(means[best] - means[runner_up]), 5),
            margin_ci95=[round(low, 5), round(high, 5)],
        )
    for name, i in (("vs_default", best), ("chosen_vs_default", chosen)):
        if i != default and n_q and (name == "vs_default" or chosen != best):
            low, high = paired_bootstrap_ci(table[default], table[i], n_resamples, seed)
            record[name] = {
                "delta": round(float(means[i] - means[default]), 5),
                "ci95": [round(low, 5), round(high, 5)],
                "expected": round(float(est["expected"][i]), 5),
                "weight": round(float(est["weight"][i]), 4),
            }
    record["chosen"] = values[chosen]
    record["decided_by"] = "evidence" if len(values) == 1 else decided_by(chosen, best, prior_best, has_prior, n_q)
    record["reason"] = _reason(values, means, est, best, default, chosen, record, n_q, metric, evidence)
    return record


def _label(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if k != "language")
    return f"{value:g}" if isinstance(value, float) else str(value)


def _prior_words(est: dict, i: int) -> str:
    if not np.isfinite(est["sd"][i]):
        return "no prior"
    return f"prior {est['mean'][i]:+.4f} ± {est['sd'][i]:.4f}"


def _gap(vs: dict) -> str:
    return f"{vs['delta']:+.4f} [{vs['ci95'][0]:+.4f}, {vs['ci95'][1]:+.4f}]"


def _reason(values, means, est, best, default, chosen, record, n_q, metric, evidence) -> str:
    if not n_q:
        return f"the default, {_label(values[default])}: no question to decide on"
    head = f"{_label(values[chosen])} ({metric} {means[chosen]:.4f} on {n_q} questions, {evidence}"
    if len(values) == 1:
        return head + "; the only candidate)"
    stab = f"stability {record['stability']:.0%}"
    if chosen == default:
        if best == default:
            margin = f"{record['margin']:+.4f} [{record['margin_ci95'][0]:+.4f}, {record['margin_ci95'][1]:+.4f}]"
            return head + f"): the default scores best, {margin} over {_label(record['runner_up'])}; {stab}"
        return head + (
            f"): the default; the best on the evidence, {_label(values[best])} ({_gap(record['vs_default'])}), expects "
            f"{est['expected'][best]:+.4f} once weighted ({est['weight'][best]:.2f}) against its "
            f"{_prior_words(est, best)}; {stab}"
        )
    vs = record["vs_default"] if chosen == best else record["chosen_vs_default"]
    text = head + (
        f"): the highest expected score, {est['expected'][chosen]:+.4f} over the default {_label(values[default])} "
        f"(evidence {_gap(vs)} at weight {est['weight'][chosen]:.2f}, {_prior_words(est, chosen)})"
    )
    if chosen != best:
        text += (
            "; the evidence alone scores the default best"
            if best == default
            else f"; the best on the evidence, {_label(values[best])}, expects {est['expected'][best]:+.4f}"
        )
    return text + f"; {stab}"


def chosen_value(record: dict):
    """What a choice record chose (`chosen`; older records name it `chosen_alpha`)."""
    return record.get("chosen", record.get("chosen_alpha"))
