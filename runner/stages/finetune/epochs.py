"""`finetune.epochs: auto` and `finetune.best_epoch`: how many epochs to plan, and which one to keep.

`epochs: auto` plans from the number of training pairs: enough epochs for TARGET_STEPS optimizer steps,
at least 1 and at most MAX_EPOCHS (docs/auto.md has the grid it comes from: few pairs want more passes,
many pairs one). The time budget may shorten the plan; the best epoch may keep an earlier one.

`finetune.best_epoch`: the model of each epoch scored on the dev split; an earlier epoch is kept
where its expected score is higher than the last's (runner/infra/choosing.py: the dev split's evidence
weighed against the benchmarks' prior of each epoch against the last, where runner/infra/prior_table.py has one:
today none, so the dev evidence decides).

The last epoch is what the recipe planned, so it is the default the priors are measured against (once
measured, a hair's breadth on a hundred dev questions will not outweigh them; ties go to it). Scoring costs
one encoding of the dev split per epoch (the last one's ranking is handed on to merging, which needs it
anyway), so `null` (auto) scores only where that is cheap next to an epoch of training: the dev texts at
most half of the texts an epoch trains on (encoding costs about a third of training, so under a sixth of
the epoch). The record goes to results.json `choices.epochs`: every epoch's dev score, the winner, the
expected scores, the seconds. `finetune.keep_epochs` saves each scored epoch's model under <run>/epochs/.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable

from runner.infra.choosing import choose
from runner.infra.priors import priors_for
from runner.infra.priors import why as prior_why

log = logging.getLogger("ragtune")

CHEAP = 0.5  # auto scores epochs when the dev texts are at most this share of an epoch's training texts
TARGET_STEPS = 32  # epochs: auto plans at least this many optimizer steps ...
MAX_EPOCHS = 4  # ... in at most this many epochs


def planned(setting, pairs: int, batch_size: int) -> tuple[float, dict]:
    """(the epochs to plan, the record): a number as given; auto from the pairs (TARGET_STEPS, MAX_EPOCHS)."""
    steps_per_epoch = math.ceil(pairs / batch_size)
    if setting != "auto":
        return float(setting), {"setting": setting, "planned": float(setting)}
    epochs = min(MAX_EPOCHS, max(1, math.ceil(TARGET_STEPS / steps_per_epoch)))
    return float(epochs), {
        "setting": "auto",
        "planned": float(epochs),
        "pairs": pairs,
        "steps_per_epoch": steps_per_epoch,
        "reason": f"{pairs} pairs make {steps_per_epoch} steps an epoch at batch {batch_size}: {epochs} epoch(s) for "
        f"{TARGET_STEPS} steps or more, between 1 and {MAX_EPOCHS}",
    }


def wanted(best_epoch: bool | None, dev_texts: int, epoch_texts: int, steps: int, steps_per_epoch: int) -> bool:
    """Whether to score the epochs: `best_epoch` when set; auto: more than one epoch to choose from, cheaply."""
    if best_epoch is not None:
        return bool(best_epoch) and dev_texts > 0
    return dev_texts > 0 and steps > steps_per_epoch and dev_texts <= CHEAP * epoch_texts


class BestEpoch:
    """A TrainerCallback factory: `score(model)` -> (dev ranking, per-query values) at each epoch's end."""

    def __init__(self, model, score: Callable, metric: str, n_resamples: int, seed: int, on_eval=None):
        from transformers import TrainerCallback

        self.model, self.score, self.metric = model, score, metric
        self.n_resamples, self.seed, self.on_eval = n_resamples, seed, on_eval
        self.epochs: list[dict] = []  # {"epoch", "dev", "values", "ranking"}
        # a CPU copy of the weights of the best epoch so far: the only one that can replace the last (the
        # trainer's own step count cannot say which epoch is last: the no-duplicates sampler may yield fewer
        # batches than it promised, so the copy is taken whenever an epoch is the best yet)
        self.best: tuple[int, dict] | None = None
        self.seconds = 0.0
        self.keep_to = None  # a folder: each scored epoch's model is saved under it (finetune.keep_epochs)
        outer = self

        class Callback(TrainerCallback):
            def on_epoch_end(self, args, state, control, **kwargs):
                outer.epoch_end(state)

        self.callback = Callback()

    def epoch_end(self, state) -> None:
        start = time.perf_counter()
        ranking, values = self.score(self.model)
        entry = {"epoch": round(float(state.epoch), 3), "dev": float(values.mean()), "values": values, "ranking": ranking}
        self.epochs.append(entry)
        if self.best is None or entry["dev"] > self.epochs[self.best[0]]["dev"]:
            self.best = (len(self.epochs) - 1, {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()})
        if self.keep_to is not None:
            self.model.save(str(Path(self.keep_to) / f"{entry['epoch']:g}"))
        seconds = time.perf_counter() - start
        self.seconds += seconds
        log.info("finetune: epoch %.2f scores %.4f on dev (%s, %.1f s)", entry["epoch"], entry["dev"], self.metric, seconds)
        if self.on_eval:
            self.on_eval(seconds)

    def finish(self) -> tuple[dict, object]:
        """(the record, the dev ranking of the kept epoch); restores the kept epoch's weights. The last epoch
        is the written default (`runner.infra.choosing`): an earlier one replaces it where its expected score
        is higher."""
        values = [e["epoch"] for e in self.epochs]
        n = len(self.epochs[-1]["values"])
        record = choose(
            values,
            [e["values"] for e in self.epochs],
            len(values) - 1,
            metric=self.metric,
            evidence=f"dev split: {n} questions the model never trained on",
            why_default="the last epoch: what the recipe planned",
            priors=priors_for("epochs", values, len(values) - 1),
            prior_why=prior_why("epochs"),
            n_resamples=self.n_resamples,
            seed=self.seed,
        )
        record.update(dev={f"{e['epoch']:g}": round(e["dev"], 5) for e in self.epochs}, seconds=round(self.seconds, 3))
        kept = values.index(record["chosen"])
        if kept != len(values) - 1:
            self.model.load_state_dict(self.best[1])
        return record, self.epochs[kept]["ranking"]
