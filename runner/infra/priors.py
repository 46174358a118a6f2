"""The priors of the choices: what each candidate is expected to score against the written default on a data
set nobody has measured yet, and how far that expectation can be trusted.

For every choice and candidate, `runner/infra/prior_table.py` holds the mean difference (candidate minus
the written default) across the project's benchmarks and the spread a new data set's difference is expected
to have around it: the Student-t predictive spread of the benchmarks' differences, s^2 (1 + 1/B) (B-1)/(B-3)
for B benchmarks, so a candidate measured on fewer than 4 gets no prior and a few that agree by chance do
not make it confident (bench/regret.py measured it against the method-of-moments spread, which did: more
regret). It is written by `python bench/priors.py write`, from the
benchmarks' training sides (the choices made before training) and dev splits (after training), never
their eval sets. `runner.infra.choosing.choose` weighs it against the run's own evidence.

Candidates are named by `key`: absolutely where a candidate means the same on every data set (a BM25
tokenisation, k1 and b, a fusion, a merge weight), relative to the default where it does not (a window
is "-128" against the longest candidate, an epoch "-1 of 2" against the last of two, the finetuned hybrid's weight
"-0.1" against the base hybrid's). A run whose default is another measured candidate gets the priors
rebased on it; a candidate the table lacks (a grid the user changed) gets none: the evidence alone.
"""

from __future__ import annotations

import math

from runner.infra.prior_table import MEASURED, PRIORS

# The mined hard negative's worth where the window's time budget would drop it (+0.015 nDCG@10 on SciFact
# supervised, docs/record.md 2026-12-04: 0.7116 with one negative against 0.6971 without): a window longer
# than the one that fits the budget with its negative is expected to lose that much with the negative.
NEGATIVE_WORTH = 0.015


def key(choice: str, values: list, i: int, default: int) -> str:
    """The prior table's name of candidate `i` of `choice` among `values` (`default`: the written default's index)."""
    v = values[i]
    if choice == "max_seq_length":
        return f"{int(v) - max(int(x) for x in values):+d}"
    if choice == "epochs":  # "-1 of 2": the first of two epochs, against the last
        return f"{i - (len(values) - 1):+d} of {len(values)}"
    if choice == "merge":
        return f"alpha={float(v):g}"
    if choice == "bm25":
        return f"stopwords={v['stopwords']} stemming={v['stemming']}"
    if choice == "bm25_params":
        return f"k1={float(v['k1']):g} b={float(v['b']):g}"
    if choice == "fusion_hybrid_base":
        head = f"{v['mode']} k={int(v['top_k'])}"
        return head if v["mode"] == "reciprocal_rerank" else f"{head} w={float(v['dense_weight']):.1f}"
    if choice == "fusion_hybrid_finetuned":
        return f"w{float(v['dense_weight']) - float(values[default]['dense_weight']):+.1f}"
    raise KeyError(f"no prior table for choice {choice}")


def priors_for(choice: str, values: list, default: int, table: dict | None = None) -> list[tuple[float, float] | None]:
    """Per candidate, (mean, spread) of its difference from `values[default]`, or None where unmeasured.
    `table`: {key: [mean, spread]} (the prior table's entry for `choice` unless given)."""
    table = PRIORS.get(choice, {}) if table is None else table
    keys = [key(choice, values, i, default) for i in range(len(values))]
    if keys[default] not in table:
        return [None] * len(values)
    d_mean, d_sd = table[keys[default]]
    out: list[tuple[float, float] | None] = []
    for i, k in enumerate(keys):
        if i == default or k not in table:
            out.append(None)
        else:
            mean, sd = table[k]
            out.append((mean - d_mean, math.sqrt(sd**2 + d_sd**2)))
    return out


def why(choice: str) -> str:
    """Where the priors of `choice` come from, in words, for its record."""
    if choice not in PRIORS:
        return ""
    m = MEASURED.get(choice, {})
    return (
        f"priors from {m.get('benchmarks', '?')} benchmarks' {m.get('side', 'training sides')} "
        f"(bench/priors.py, {MEASURED.get('date', '?')}, commit {MEASURED.get('commit', '?')})"
    )
