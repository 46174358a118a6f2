"""`finetune.time_budget_s`: training fits the time the user gave it, and says what it gave up.

The finetune stage (mining hard negatives, training, scoring each epoch on dev) is timed from its
start. What it would cost is measured, not guessed from the hardware:

- Before mining (only when hard negatives are planned): a short probe, three training steps of 16 rows
  on a copy of the model, gives the seconds per step of plain pairs (scaled to the batch); a step with
  mined negatives costs that times the share of extra tokens they add. When the planned epochs with negatives would not fit, the
  negatives go first: they double the passages a step reads for a small gain (SciFact supervised dev
  +0.052 against +0.046 without them), while the epochs were chosen by the project's sweeps.
- During training, `Clock` (a transformers callback) measures the real steps from the third on; when
  the planned steps would end past the budget it re-targets the learning-rate schedule to the steps
  that fit (warm-up and linear decay over the shorter run, not a cut mid-schedule) and stops there.
  If not even one epoch fits at the first check, the stage stops with a message that says what would.

Batch size is not a lever: a step's cost grows with the pairs in it, so an epoch costs about the same
at any batch size (README, "Time budget"); the budget leaves it alone.

`auto` is 900 s on a CPU (15 minutes of training on a 2-core machine) and 3,600 s on a GPU; null is
no budget. Everything lands in results.json `choices.time_budget`.
"""

from __future__ import annotations

import functools
import logging
import math
import time

from runner.infra.errors import RagtuneError

log = logging.getLogger("ragtune")

AUTO_BUDGET_S = {"cpu": 900.0, "gpu": 3600.0}
PROBE_STEPS = 3  # the first step pays for warm-up; the other two are timed
PROBE_BATCH = 16  # rows a probe step trains on: half of the default batch, so the probe costs 1.5 of its steps
FIRST_CHECK = 3  # steps measured before the clock first projects the run
FORWARD_SHARE = 1 / 3  # encoding a text costs about a third of training on it (forward of forward + backward)


def resolve_budget(value, device: str) -> float | None:
    """`finetune.time_budget_s`: auto, a number of seconds, or null (no budget)."""
    if value is None:
        return None
    if value == "auto":
        return AUTO_BUDGET_S["cpu" if device in ("cpu", "mps") else "gpu"]
    return float(value)


def check(value) -> list[str]:
    """Problems with a `finetune.time_budget_s` setting (the validator's), as sentences."""
    if value is None or value == "auto":
        return []
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        return [
            f"finetune.time_budget_s={value!r} is not a time; give seconds of training (e.g. 900), auto "
            "(900 on a CPU, 3600 on a GPU) or null (no budget)"
        ]
    return []


def mean_tokens(lengths, cap: int) -> float:
    return float(sum(min(n, cap) for n in lengths)) / max(1, len(lengths))


def negatives_step_factor(query_tokens: float, passage_tokens: float, negatives: int) -> float:
    """How much longer a step with `negatives` mined passages per pair takes than a plain one."""
    return (query_tokens + (1 + negatives) * passage_tokens) / (query_tokens + passage_tokens)


class Clock:
    """A TrainerCallback factory: fits the planned steps into what is left of the budget.

    `started`: when the finetune stage began (perf_counter); `epoch_evals`: the dev scorings still owed
    after the steps, each `eval_s_estimate` steps' worth of time until the first one is measured."""

    def __init__(
        self,
        budget_s: float | None,
        started: float,
        steps_per_epoch: int,
        record: dict,
        warmup_ratio: float,
        epoch_evals: int = 0,
        eval_s_estimate=None,
    ):
        from transformers import TrainerCallback

        self.budget_s, self.started, self.steps_per_epoch = budget_s, started, steps_per_epoch
        self.record, self.warmup_ratio = record, warmup_ratio
        self.eval_s, self.eval_s_estimate, self.evals_left = None, eval_s_estimate, epoch_evals
        self.first_step_end, self.planned = None, None
        outer = self

        class Callback(TrainerCallback):
            def on_step_end(self, args, state, control, lr_scheduler=None, **kwargs):
                outer.step_end(state, control, lr_scheduler)

        self.callback = Callback()

    def eval_done(self, seconds: float) -> None:
        self.eval_s = seconds if self.eval_s is None else max(self.eval_s, seconds)
        self.evals_left = max(0, self.evals_left - 1)

    def step_end(self, state, control, scheduler) -> None:
        now = time.perf_counter()
        step = state.global_step
        if step == 1:
            self.first_step_end = now
        if self.budget_s is None or self.first_step_end is None or step < FIRST_CHECK:
            return
        first = self.planned is None
        self.planned = self.planned or state.max_steps
        step_s = (now - self.first_step_end) / (step - 1)
        self.record["seconds_per_step"] = round(step_s, 3)
        elapsed = now - self.started
        eval_s = self.eval_s if self.eval_s is not None else (self.eval_s_estimate or 0.0) * step_s
        reserve = self.evals_left * eval_s
        fit = step + int((self.budget_s - elapsed - reserve) // step_s)  # the last step that ends within budget
        if first:
            self.first_check(step, step_s, elapsed, reserve, fit)
        if step >= state.max_steps:  # the last step: nothing left to fit
            return
        # the pace measured so far moves the end: shorter when the rest no longer fits, back toward the plan
        # (with a step of slack, so noise does not flip it) when it does again; now, when the budget is spent
        target = max(step, min(self.planned, fit))
        if target == state.max_steps or (state.max_steps < target < self.planned and fit - 1 <= state.max_steps):
            return
        if target == step:
            control.should_training_stop = True
        (log.warning if state.max_steps == self.planned else log.info)(
            "finetune: time budget %.0f s: at %.1f s a step the %d planned steps would end at %.0f s; training %d "
            "steps (%.2f epochs)",
            self.budget_s,
            step_s,
            self.planned,
            elapsed + (self.planned - step) * step_s + reserve,
            target,
            target / self.steps_per_epoch,
        )
        gave_up = [g for g in self.record.get("gave_up", []) if not g.startswith("steps ")]
        if target < self.planned:
            gave_up.append(
                f"steps {self.planned} -> {target} ({self.planned / self.steps_per_epoch:.2f} -> "
                f"{target / self.steps_per_epoch:.2f} epochs): {step_s:.1f} s a step measured over "
                f"{step - 1} steps"
            )
        self.record["gave_up"] = gave_up
        retarget(scheduler, target, self.warmup_ratio)
        state.max_steps = target

    def first_check(self, step: int, step_s: float, elapsed: float, reserve: float, fit: int) -> None:
        """Does the plan fit, does one epoch? Records the projected seconds of the plan; stops the run when
        not even one epoch fits (`fit`: the last step that ends within the budget)."""
        projected = elapsed + (self.planned - step) * step_s + reserve
        self.record["projected_s"] = round(projected, 1)
        if fit < min(self.steps_per_epoch, self.planned):
            epoch_s = self.steps_per_epoch * step_s
            raise RagtuneError(
                f"finetune.time_budget_s={self.budget_s:g} cannot fit one epoch: {seconds(elapsed)} s are spent "
                f"(mining, the first {step} steps) and an epoch is {self.steps_per_epoch} steps of "
                f"{seconds(step_s)} s = {seconds(epoch_s)} s on this machine. Give finetune.time_budget_s="
                f"{math.ceil(elapsed + epoch_s + reserve)} or more, null for no budget, fewer pairs, or a shorter "
                "base_model.max_seq_length. Pairs and the base model's evaluation are cached: the rerun starts "
                "at training."
            )


def seconds(value: float) -> str:
    """A duration for a message: two significant digits below 10 s, whole seconds above."""
    return f"{value:.2g}" if value < 10 else f"{value:.0f}"


def retarget(scheduler, total_steps: int, warmup_ratio: float) -> None:
    """Make transformers' linear schedule (warm-up, then decay to 0) span `total_steps` instead."""
    from transformers.optimization import _get_linear_schedule_with_warmup_lr_lambda

    for i, fn in enumerate(getattr(scheduler, "lr_lambdas", [])):
        if getattr(fn, "func", None) is _get_linear_schedule_with_warmup_lr_lambda:
            warmup = min(fn.keywords["num_warmup_steps"], math.ceil(warmup_ratio * total_steps))
            scheduler.lr_lambdas[i] = functools.partial(
                _get_linear_schedule_with_warmup_lr_lambda, num_warmup_steps=warmup, num_training_steps=total_steps
            )


def probe_step_seconds(make_trainer, model, dataset, batch_size: int) -> float:
    """Seconds per training step of plain pairs at `batch_size`: PROBE_STEPS steps of at most
    PROBE_BATCH rows on a copy of the model (its weights are left as they were), scaled to the batch (a
    step's cost grows with its rows); the first step's warm-up is not counted. NaN when too few rows."""
    import copy

    from transformers import TrainerCallback

    probe_batch = min(batch_size, PROBE_BATCH)
    n = min(len(dataset), probe_batch * PROBE_STEPS)
    stamps = []

    class Stamp(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stamps.append(time.perf_counter())

    trainer = make_trainer(copy.deepcopy(model), dataset.select(range(n)), PROBE_STEPS, [Stamp()], batch_size=probe_batch)
    trainer.train()
    if len(stamps) < 2:
        return float("nan")
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1) * batch_size / probe_batch


def projection(
    step_s: float, *, negatives: int, steps: int, query_tokens: float, passage_tokens: float, texts_to_mine: int, batch_size: int
) -> dict:
    """What the planned steps with `negatives` mined passages per pair would cost, from `step_s` (seconds per
    plain step): the probe's record, less the time already spent."""
    factor = negatives_step_factor(query_tokens, passage_tokens, negatives)
    mining_s = texts_to_mine / (2 * batch_size) * step_s * FORWARD_SHARE
    return {
        "seconds_per_plain_step": round(step_s, 3),
        "negatives_step_factor": round(factor, 3),
        "mining_s_estimate": round(mining_s, 1),
        "training_s_estimate": round(mining_s + steps * step_s * factor, 1),
    }


def fit_negatives(
    negatives: int,
    budget_s: float | None,
    started: float,
    probe,
    record: dict,
    *,
    steps: int,
    steps_per_epoch: int,
    query_tokens: float,
    passage_tokens: float,
    texts_to_mine: int,
    batch_size: int,
) -> int:
    """The number of mined negatives per pair that lets the planned steps fit the budget: `negatives`
    when they fit, else 0 (then the clock fits the epochs). `probe()`: seconds per plain step."""
    if negatives <= 0 or budget_s is None:
        return negatives
    step_s = probe()
    if not math.isfinite(step_s):  # too few rows to time two steps: nothing to go on, keep the plan
        record["probe"] = {"seconds_per_plain_step": None}
        return negatives
    cost = projection(
        step_s,
        negatives=negatives,
        steps=steps,
        query_tokens=query_tokens,
        passage_tokens=passage_tokens,
        texts_to_mine=texts_to_mine,
        batch_size=batch_size,
    )
    elapsed = time.perf_counter() - started
    with_negatives = elapsed + cost["training_s_estimate"]
    record["probe"] = {
        **{k: v for k, v in cost.items() if k != "training_s_estimate"},
        "projected_with_negatives_s": round(with_negatives, 1),
    }
    if with_negatives <= budget_s:
        return negatives
    plain = elapsed + steps * step_s
    why = (
        f"hard negatives {negatives} -> 0: with them {steps} steps ({steps / steps_per_epoch:.2f} epochs) project "
        f"to {with_negatives:.0f} s ({step_s * cost['negatives_step_factor']:.1f} s a step, mining "
        f"~{cost['mining_s_estimate']:.0f} s), without them {plain:.0f} s"
    )
    log.warning("finetune: time budget %.0f s: %s", budget_s, why)
    record.setdefault("gave_up", []).append(why)
    return 0
