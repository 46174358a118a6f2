"""Weight merging (WiSE-FT, Wortsman et al. 2022; LM-Cocktail): the base and finetuned weights,
interpolated, often keep most of the gain and give back part of what finetuning broke.

Each `merge.alphas` (the finetuned model's share) is scored on the dev split, next to the finetuned
model itself (alpha 1) and the base (alpha 0); a merge becomes the run's model only when it scores
above the finetuned model there. The whole curve goes to results.json (`choices.merge`).
"""

from __future__ import annotations

import copy
import time

import numpy as np

from runner.choices import metric_k, per_query
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


def dev_score(model, dev: EvalSet, metric: str, batch_size: int, precision: str) -> float:
    from runner.evaluate import dense_top

    ranking = dense_top(model, "dev", dev, metric_k(metric)[1], batch_size, precision)
    return float(per_query(ranking.ranked_ids(), dev, dev.answered_query_ids(), metric).mean())


def choose_merge(base_model, tuned_model, dev: EvalSet, alphas, metric: str, batch_size: int,
                 precision: str) -> tuple[object | None, dict]:
    """(the merged model to ship, or None when the finetuned model scores best on dev; the record)."""
    start = time.perf_counter()
    base_state = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    curve = {0.0: dev_score(base_model, dev, metric, batch_size, precision),
             1.0: dev_score(tuned_model, dev, metric, batch_size, precision)}
    models = {}
    for alpha in sorted(float(a) for a in alphas if 0 < a < 1):
        models[alpha] = interpolated(base_state, tuned_model, alpha)
        curve[alpha] = dev_score(models[alpha], dev, metric, batch_size, precision)
    best = max(models, key=lambda a: (curve[a], a), default=None)  # a tie goes to more of the finetuned model
    keep = best is not None and curve[best] > curve[1.0] + 1e-12
    record = {"metric": metric, "curve": {f"{a:g}": round(v, 5) for a, v in sorted(curve.items())},
              "chosen_alpha": best if keep else 1.0, "kept": keep,
              "reason": (f"alpha {best:g} scores {curve[best]:.4f} on dev, above the finetuned model's {curve[1.0]:.4f}"
                         if keep else f"no merge scores above the finetuned model's {curve[1.0]:.4f} on dev"),
              "seconds": round(time.perf_counter() - start, 3)}
    return (models[best] if keep else None), record


def curve_arrays(record: dict) -> tuple[np.ndarray, np.ndarray]:
    xs = sorted(float(a) for a in record["curve"])
    return np.array(xs), np.array([record["curve"][f"{a:g}"] for a in xs])
