"""sentence-transformers' SentenceTransformerTrainer as ragtune runs it: its arguments, the batch sampler,
the loss forwarded to the tracker (a NaN stops training), and out-of-memory turned into what to lower."""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any, Callable

from runner.infra.errors import RagtuneError
from runner.stages.finetune.batching import NoDuplicateBatches, real_token_share, text_lengths

log = logging.getLogger("ragtune")
# group_by_length=null groups batches when that gives 1.2x the real passage tokens of random batches (a sixth
# less padding). 1.25 left the filings set's long passages random at 91% vs 73% real tokens (1.247x), where a
# 512-token step took 27.7 s and the time budget dropped a fifth of the planned steps; docs/auto.md
GROUPING_PAYS = 1.2


def run_training(train: Callable[[], Any], *, batch_size: int, loss: str = "mnrl") -> Any:
    """`train()`, with out-of-memory (GPU or CPU) turned into a message that says what to lower."""
    import torch

    try:
        return train()
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as err:
        text = str(err)
        if (
            not isinstance(err, (torch.OutOfMemoryError, MemoryError))
            and "out of memory" not in text
            and "can't allocate memory" not in text
        ):
            raise
        hint = (
            "or use finetune.loss=cached_mnrl with a small finetune.mini_batch_size (same batch, a fraction of the memory)"
            if loss != "cached_mnrl"
            else "or lower finetune.mini_batch_size"
        )
        raise RagtuneError(
            f"training ran out of memory at finetune.batch_size={batch_size} ({type(err).__name__}: "
            f"{text.splitlines()[0][:160] if text else 'no detail'}); lower finetune.batch_size {hint}, "
            "or lower base_model.max_seq_length. Pairs and the base evaluation are cached: the rerun "
            "starts at training."
        ) from None


class _ForwardLogs:
    """A TrainerCallback that hands each logged loss to `on_log` and remembers NaNs."""

    def __init__(self, on_log: Callable[[dict, int], None] | None):
        from transformers import TrainerCallback

        outer = self
        self.nan = False

        class Callback(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs:
                    # a NaN loss, or NaN gradients (the weights are broken too): stop now
                    if math.isnan(float(logs["loss"])) or math.isnan(float(logs.get("grad_norm", 0.0))):
                        outer.nan = control.should_training_stop = True
                    if on_log:
                        on_log(
                            {
                                "train/loss": float(logs["loss"]),
                                "train/learning_rate": float(logs.get("learning_rate", 0.0)),
                                "train/epoch": float(logs.get("epoch", 0.0)),
                            },
                            state.global_step,
                        )

        self.callback = Callback()


def training_args(
    output_dir: Path,
    *,
    epochs,
    max_steps,
    batch_size,
    learning_rate,
    warmup_ratio,
    weight_decay,
    max_grad_norm,
    seed,
    precision,
    device,
    dataloader_num_workers,
    torch_compile,
    total,
    model,
):
    from sentence_transformers import SentenceTransformerTrainingArguments
    from sentence_transformers.training_args import BatchSamplers

    return SentenceTransformerTrainingArguments(
        output_dir=str(output_dir / "checkpoints"),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        warmup_steps=warmup_ratio,  # transformers 5: a float below 1 is a ratio of all steps
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,  # gradient clipping
        seed=seed,
        data_seed=seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES,  # group_by_length: set by batch_sampler(), once the rows are final
        # the model's query / passage prompts, prepended in training exactly as in evaluation (the trainer sets
        # them again for the final columns: mined negatives are passages too)
        prompts=column_prompts(model, ["anchor", "positive"]),
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        dataloader_pin_memory=device.startswith("cuda"),  # pinned host memory only where a GPU reads it
        dataloader_num_workers=dataloader_num_workers,
        torch_compile=torch_compile,
        report_to="none",  # the runner logs to W&B itself, through on_log
        save_strategy="no",
        eval_strategy="no",
        logging_steps=max(1, total // 20),
        logging_nan_inf_filter=False,  # the default hides a NaN loss behind the mean of earlier ones
    )


@functools.cache
def quiet_progress():
    """transformers' progress bar without the dict of the loss it writes under it at every logging step: the
    runner logs the loss itself (W&B `train/loss`, a NaN stops the run), and the dicts buried the verdict."""
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            return None

    return QuietProgress


def column_prompts(model, columns: list[str]) -> dict | None:
    """{column: prompt}: the model's query prompt for the anchor, its passage prompt for every other column (the
    positive and each mined negative: served with the prompt, so trained with it, or its absence is a shortcut
    to a negative); None where the model has no prompts."""
    query, passage = model.prompts.get("query", ""), model.prompts.get("document", "")
    prompts = {c: query if c == "anchor" else passage for c in columns}
    return {c: p for c, p in prompts.items() if p} or None


def _trainer(model, dataset, max_steps, callbacks, *, model_args, loss_of, batch_sampler=None, batch_size=None):
    """A SentenceTransformerTrainer over `dataset` (`max_steps`, `batch_size`: a probe's few small steps;
    None: the planned run); every column of `dataset` gets its prompt (`column_prompts`)."""
    import dataclasses

    from sentence_transformers import SentenceTransformerTrainer

    args = model_args
    prompts = column_prompts(model, list(dataset.column_names))
    if prompts != args.prompts:
        args = dataclasses.replace(args, prompts=prompts)
    if max_steps is not None:
        args = dataclasses.replace(
            args, max_steps=max_steps, logging_steps=1, per_device_train_batch_size=batch_size or args.per_device_train_batch_size
        )
    if batch_sampler is not None:
        args.batch_sampler = batch_sampler
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss_of(model), callbacks=callbacks)
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)  # prints the loss dict of every logging step (with tqdm disabled)
    if trainer.pop_callback(ProgressCallback) is not None:  # the bar stays; the dict it writes under it does not
        trainer.add_callback(quiet_progress())
    return trainer


def batch_sampler(train_dataset, model, batch_size: int, group_by_length: bool | None, seed: int):
    """(the batch sampler: no duplicates, full batches, length-grouped where that pays or is asked
    for; the record of the choice)."""
    record = {"setting": group_by_length}
    if group_by_length is False:
        return NoDuplicateBatches, {**record, "chosen": "random", "reason": "finetune.group_by_length=false"}
    lengths = text_lengths(train_dataset, model.tokenizer, model.max_seq_length)
    grouped, random_ = (real_token_share(lengths, batch_size, g, seed) for g in (True, False))
    record["real_token_share"] = {"grouped": round(grouped, 4), "random": round(random_, 4)}
    # auto (None): only where it pays; grouping changes which negatives share a batch
    if group_by_length or grouped >= GROUPING_PAYS * random_:
        reason = f"length-grouped batches, {100 * grouped:.0f}% of passage tokens real (random batches: {100 * random_:.0f}%)"
        log.info("finetune: %s", reason)
        return functools.partial(NoDuplicateBatches, lengths=lengths), {**record, "chosen": "length-grouped", "reason": reason}
    reason = (
        f"random batches, {100 * random_:.0f}% of passage tokens real (grouping would give {100 * grouped:.0f}%: not worth it)"
    )
    log.info("finetune: %s", reason)
    return NoDuplicateBatches, {**record, "chosen": "random", "reason": reason}
