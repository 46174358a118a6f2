"""Weight merging (WiSE-FT, Wortsman et al. 2022; LM-Cocktail): the base and finetuned weights,
interpolated, often keep most of the gain and give back part of what finetuning broke.

Each `merge.alphas` (the finetuned model's share) is scored on the dev split, next to the finetuned
model itself (alpha 1) and the base (alpha 0, from the scores the run made before training); a merge
becomes the run's model where its expected score (the dev split's evidence and the benchmarks' prior,
runner/infra/choosing.py) is higher than the finetuned model's. The whole curve goes to results.json
(`choices.merge`), W&B and compare's plot.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from runner.data.eval_set import EvalSet
from runner.infra.choosing import choose
from runner.infra.priors import priors_for
from runner.infra.priors import why as prior_why
from runner.stages.evaluate.scoring import dev_scores, ranking_scores


def interpolated(base_state: dict, tuned_model, alpha: float):
    """A copy of `tuned_model` with weights (1 - alpha) * base + alpha * finetuned (floating tensors;
    integer buffers such as position ids are the finetuned model's)."""
    merged = copy.deepcopy(tuned_model)
    state = merged.state_dict()
    for name, tensor in state.items():
        if tensor.is_floating_point() and name in base_state:
            base = base_state[name].to(tensor.device, tensor.dtype)
            state[name] = (1.0 - alpha) * base + alpha * tensor
    merged.load_state_dict(state)
    return merged


def choose_merge(
    base_state: dict,
    tuned_model,
    dev: EvalSet,
    *,
    alphas,
    metric: str,
    batch_size: int,
    precision: str,
    k: int,
    base_dev_scores,
    n_resamples: int,
    seed: int,
    tuned_dev=None,
) -> tuple[object | None, dict, object]:
    """(the merged model to ship, or None; the record; the dev ranking of the model the run keeps, for
    its hybrid's choice). The finetuned model (alpha 1) is the written default; a merge replaces it where
    its expected score is higher (`runner.infra.choosing`: the dev split's evidence weighed against the
    benchmarks' prior, so a hair's breadth on a hundred dev questions does not swap the run's model against
    what the benchmarks measured). `base_dev_scores`: the base model's per-question dev scores (alpha 0 on the curve; not a
    candidate: shipping the base is the verdict's call); `tuned_dev`: the finetuned model's dev ranking."""
    start = time.perf_counter()
    rankings, scores, models = {}, {}, {}
    if tuned_dev is not None:
        rankings[1.0], scores[1.0] = tuned_dev, ranking_scores(tuned_dev, dev, metric)
    else:
        rankings[1.0], scores[1.0] = dev_scores(tuned_model, "dev", dev, metric, k, batch_size, precision)
    for alpha in sorted((float(a) for a in alphas if 0 < a < 1), reverse=True):  # a tie goes to more of the finetuned model
        models[alpha] = interpolated(base_state, tuned_model, alpha)
        rankings[alpha], scores[alpha] = dev_scores(models[alpha], "dev", dev, metric, k, batch_size, precision)
    values = list(scores)  # 1.0 (the default) first
    record = choose(
        values,
        [scores[a] for a in values],
        0,
        metric=metric,
        evidence=f"dev split: {len(dev.answered_query_ids())} questions the model never trained on",
        why_default="the finetuned model as trained",
        priors=priors_for("merge", values, 0),
        prior_why=prior_why("merge"),
        n_resamples=n_resamples,
        seed=seed,
    )
    curve = {a: float(v.mean()) for a, v in scores.items()}
    if base_dev_scores is not None:
        curve[0.0] = float(np.mean(base_dev_scores))
    chosen = record["chosen"]
    record.update(
        curve={f"{a:g}": round(v, 5) for a, v in sorted(curve.items())},
        kept=chosen != 1.0,
        seconds=round(time.perf_counter() - start, 3),
    )
    return models.get(chosen), record, rankings[chosen]


def curve_arrays(record: dict) -> tuple[np.ndarray, np.ndarray]:
    xs = sorted(float(a) for a in record["curve"])
    return np.array(xs), np.array([record["curve"][f"{a:g}"] for a in xs])
