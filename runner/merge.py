"""Weight merging (WiSE-FT, Wortsman et al. 2022; LM-Cocktail): the base and finetuned weights,
interpolated, often keep most of the gain and give back part of what finetuning broke.

Each `merge.alphas` (the finetuned model's share) is scored on the dev split, next to the finetuned
model itself (alpha 1) and the base (alpha 0, from the ranking the run made before training); a merge
becomes the run's model only when it scores above the finetuned model there. The whole curve goes to
results.json (`choices.merge`).
"""

from __future__ import annotations

import copy
import time

import numpy as np

from runner.choices import per_query
from runner.eval_set import EvalSet


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


def dev_ranking(model, dev: EvalSet, k: int, batch_size: int, precision: str):
    from runner.evaluate import dense_top

    return dense_top(model, "dev", dev, k, batch_size, precision)


def score(ranking, dev: EvalSet, metric: str) -> float:
    return float(per_query(ranking.ranked_ids(), dev, dev.answered_query_ids(), metric).mean())


def choose_merge(base_state: dict, tuned_model, dev: EvalSet, alphas, metric: str, batch_size: int,
                 precision: str, k: int, base_dev=None) -> tuple[object | None, dict, object]:
    """(the merged model to ship, or None when the finetuned model scores best on dev; the record; the
    dev ranking of the model the run keeps, for its hybrid's choice). `base_dev`: the base model's dev
    ranking when the run has it already (alpha 0 costs nothing then)."""
    start = time.perf_counter()
    rankings = {1.0: dev_ranking(tuned_model, dev, k, batch_size, precision)}
    models = {}
    for alpha in sorted(float(a) for a in alphas if 0 < a < 1):
        models[alpha] = interpolated(base_state, tuned_model, alpha)
        rankings[alpha] = dev_ranking(models[alpha], dev, k, batch_size, precision)
    curve = {a: score(r, dev, metric) for a, r in rankings.items()}
    if base_dev is not None:
        curve[0.0] = score(base_dev, dev, metric)
    best = max(models, key=lambda a: (curve[a], a), default=None)  # a tie goes to more of the finetuned model
    keep = best is not None and curve[best] > curve[1.0] + 1e-12
    record = {"metric": metric, "curve": {f"{a:g}": round(v, 5) for a, v in sorted(curve.items())},
              "chosen_alpha": best if keep else 1.0, "kept": keep,
              "reason": (f"alpha {best:g} scores {curve[best]:.4f} on dev, above the finetuned model's {curve[1.0]:.4f}"
                         if keep else f"no merge scores above the finetuned model's {curve[1.0]:.4f} on dev"),
              "seconds": round(time.perf_counter() - start, 3)}
    return (models[best] if keep else None), record, rankings[best if keep else 1.0]


def curve_arrays(record: dict) -> tuple[np.ndarray, np.ndarray]:
    xs = sorted(float(a) for a in record["curve"])
    return np.array(xs), np.array([record["curve"][f"{a:g}"] for a in xs])
