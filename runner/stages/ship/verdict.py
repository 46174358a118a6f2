"""The verdict: which retriever to ship, and why, from the eval set's per-query scores.

The rule, fixed before any number is seen (so applying it to the eval set is a test, not a tuning):
  1. A row is out if another row beats it clearly: the paired 95% interval of (other - row) lies
     above 0 on the deciding metric (the `optimized_metric`'s, e.g. nDCG@10).
  2. A row is out if a guard set flagged it (its trained weights lose too much elsewhere).
  3. Of the rows left, ship the simplest, in this order: the base model, BM25, the base hybrid, the
     finetuned model, the merged model, the finetuned hybrid. Less to build and run comes first; a
     trained model ships only when it is clearly better than everything simpler.
So a finetuned model that is not clearly better than what it would replace is never the answer, and
a dense model is never recommended over a keyword or hybrid retriever that scores clearly higher.
"""

from __future__ import annotations

import numpy as np

from runner.data.rows import LABELS
from runner.data.rows import SIMPLEST_FIRST as ORDER
from runner.infra.metrics import Paired


def decide(
    per_query: dict[str, np.ndarray], metric: str, n_resamples: int, seed: int, flagged: dict[str, str] | None = None
) -> dict:
    """{"deploy", "reason", "metric", "scores", "beaten_by", "flagged"} from each row's per-query values."""
    flagged = flagged or {}
    rows = [r for r in ORDER if r in per_query]
    scores = {r: float(np.mean(per_query[r])) for r in rows}
    pairs = {}
    for i, a in enumerate(rows):
        for b in rows[i + 1 :]:  # (a - b) is (b - a) mirrored: the BCa interval respects the sign flip
            c = Paired.of(per_query[a], per_query[b], n_resamples, seed)
            pairs[(a, b)], pairs[(b, a)] = c.as_dict(), c.flipped().as_dict()
    beaten_by = {r: [o for o in rows if o != r and pairs[(r, o)]["ci95"][0] > 0] for r in rows}
    left = [r for r in rows if not beaten_by[r] and r not in flagged]
    if not left:  # every unbeaten row was flagged: the best unflagged one
        left = sorted((r for r in rows if r not in flagged), key=lambda r: -scores[r])[:1] or rows[:1]
    deploy = left[0]

    def vs(o: str) -> str:  # a row a guard flagged says so wherever it is named
        c = pairs[(deploy, o)]
        flag = f" ({flagged[o]})" if o in flagged else ""
        return f"{o} {c['delta']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]{flag}"

    ties = [o for o in left if o != deploy]
    worse = [o for o in rows if o != deploy and deploy in beaten_by[o]]
    reason = [
        f"{LABELS[deploy]} ({deploy}): {metric} {scores[deploy]:.4f} on the eval set, and no other retriever is clearly better"
    ]
    if ties:
        reason.append(f"simpler than those it ties with ({'; '.join(vs(o) for o in ties)})")
    if worse:
        reason.append(f"clearly better than {'; '.join(vs(o) for o in worse)}")
    skipped = [o for o in ORDER if o in rows and o not in left and o not in worse and o != deploy]
    if skipped:
        reason.append(f"not chosen: {'; '.join(vs(o) for o in skipped)}")
    return {
        "deploy": deploy,
        "reason": "; ".join(reason) + ".",
        "metric": metric,
        "scores": scores,
        "beaten_by": beaten_by,
        "flagged": flagged,
        "vs_deploy": {o: pairs[(deploy, o)] for o in rows if o != deploy},
    }
