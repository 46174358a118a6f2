"""Weight merging (WiSE-FT, Wortsman et al. 2022; LM-Cocktail): the base and finetuned weights,
interpolated, often keep most of the gain and give back part of what finetuning broke.

Each `merge.alphas` (the finetuned model's share) is scored on the dev split, next to the finetuned
model itself (alpha 1) and the base (alpha 0, from the ranking the run made before training); the best
merge becomes the run's model only when it is clearly better than the finetuned model there (paired 95%
interval above 0). The whole curve goes to results.json (`choices.merge`), W&B and compare's plot.
"""

from __future__ import annotations

import copy
import time

import numpy as np

from runner.data.eval_set import EvalSet


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
    alphas,
    metric: str,
    batch_size: int,
    precision: str,
    k: int,
    base_dev,
    n_resamples: int,
    seed: int,
    tuned_dev=None,
) -> tuple[object | None, dict, object]:
    """(the merged model to ship, or None; the record; the dev ranking of the model the run keeps, for
    its hybrid's choice). The best merge replaces the finetuned model only when it is clearly better on
    dev (the paired 95% interval of the difference above 0): a hair's breadth on dev is noise, and
    swapping the run's model on noise costs as often as it pays. `base_dev`: the base model's dev
    ranking when the run has it already (alpha 0 costs nothing then); `tuned_dev`: the finetuned model's."""
    from runner.stages.evaluate.scoring import dev_scores, ranking_scores
    from runner.infra.metrics import paired_bootstrap_ci

    start = time.perf_counter()
    rankings, scores, models = {}, {}, {}
    if tuned_dev is not None:
        rankings[1.0], scores[1.0] = tuned_dev, ranking_scores(tuned_dev, dev, metric)
    else:
        rankings[1.0], scores[1.0] = dev_scores(tuned_model, "dev", dev, metric, k, batch_size, precision)
    for alpha in sorted(float(a) for a in alphas if 0 < a < 1):
        models[alpha] = interpolated(base_state, tuned_model, alpha)
        rankings[alpha], scores[alpha] = dev_scores(models[alpha], "dev", dev, metric, k, batch_size, precision)
    if base_dev is not None:
        scores[0.0] = ranking_scores(base_dev, dev, metric)
    curve = {a: float(v.mean()) for a, v in scores.items()}
    best = max(models, key=lambda a: (curve[a], a), default=None)  # a tie goes to more of the finetuned model
    ci = paired_bootstrap_ci(scores[1.0], scores[best], n_resamples, seed) if best is not None else (0.0, 0.0)
    keep = best is not None and ci[0] > 0
    reason = _reason(best, keep, curve, ci)
    record = {
        "metric": metric,
        "curve": {f"{a:g}": round(v, 5) for a, v in sorted(curve.items())},
        "best_alpha": best,
        "ci95_vs_finetuned": list(ci),
        "chosen_alpha": best if keep else 1.0,
        "kept": keep,
        "reason": reason,
        "seconds": round(time.perf_counter() - start, 3),
    }
    return (models[best] if keep else None), record, rankings[best if keep else 1.0]


def _reason(best: float | None, keep: bool, curve: dict[float, float], ci: tuple[float, float]) -> str:
    """Why the run keeps the merge at `best`, or the finetuned model, in a sentence."""
    if best is None:
        return "no merge.alphas between 0 and 1"
    if keep:
        return (
            f"alpha {best:g} scores {curve[best]:.4f} on dev, clearly above the finetuned model's "
            f"{curve[1.0]:.4f} ({curve[best] - curve[1.0]:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}])"
        )
    return (
        f"the best merge, alpha {best:g}, scores {curve[best]:.4f} on dev against the finetuned model's "
        f"{curve[1.0]:.4f} ({curve[best] - curve[1.0]:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]): not clearly "
        "better, the finetuned model stays"
    )


def curve_arrays(record: dict) -> tuple[np.ndarray, np.ndarray]:
    xs = sorted(float(a) for a in record["curve"])
    return np.array(xs), np.array([record["curve"][f"{a:g}"] for a in xs])
