"""Stage `finetune`: a base model and training pairs in, a saved model directory out.

The directory loads with `SentenceTransformer(path)` and with LlamaIndex's
`Settings.embed_model = "local:<path>"`.
"""

from __future__ import annotations

import functools
import logging
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from runner.infra.errors import RagtuneError
from runner.infra.models import autocast, resolve_precision
from runner.stages.finetune.hf_trainer import _ForwardLogs, _trainer, batch_sampler, run_training, training_args
from runner.stages.finetune.losses import LOSSES, build_loss
from runner.stages.finetune.mining import consistent_rows, mined
from runner.stages.finetune.result import Finetuned
from runner.data.pairs import EmbeddingQAFinetuneDataset

log = logging.getLogger("ragtune")


def pair_rows(pairs: EmbeddingQAFinetuneDataset) -> dict[str, list[str]]:
    """(anchor, positive) columns: one row per (query, relevant passage)."""
    anchors, positives = [], []
    for qid, query in pairs.queries.items():
        for doc_id in pairs.relevant_docs.get(qid, []):
            anchors.append(query)
            positives.append(pairs.corpus[doc_id])
    return {"anchor": anchors, "positive": positives}


def train_sentence_transformers(
    model,
    pairs: EmbeddingQAFinetuneDataset,
    output_dir: str | Path,
    *,
    loss: str,
    mini_batch_size: int,
    matryoshka_dims: list[int],
    scale: float,
    directions: list[str],
    hardness_strength: float,
    hard_negatives: dict | None,
    filter_top_k: int,
    epochs: float | str,
    max_steps: int,
    batch_size: int,
    learning_rate: float,
    group_by_length: bool | None,
    warmup_ratio: float,
    weight_decay: float,
    max_grad_norm: float,
    time_budget_s: float | str | None,
    best_epoch: bool | None,
    dataloader_num_workers: int,
    torch_compile: bool,
    seed: int,
    precision: str,
    device: str,
    on_log: Callable[[dict, int], None] | None = None,
    dev: DevScoring | None = None,
    report: dict | None = None,
) -> Finetuned:
    """Train `model` in place with MultipleNegativesRankingLoss; save it to `output_dir/model`.

    The no-duplicates batch sampler keeps two rows that share a text (two questions about one chunk)
    out of one batch: in-batch negatives that are really positives would teach the wrong thing.
    `group_by_length` batches passages of similar length together (runner.stages.finetune.batching): less padding;
    None (auto) does so only where that gives 1.2x the real passage tokens of random batches.
    `time_budget_s` (runner.stages.finetune.budget) fits mined negatives and epochs into the time given; `best_epoch`
    with `dev` (runner.stages.finetune.epochs) keeps an earlier epoch that is clearly better on the dev split. What
    both decided goes into `report` (`time_budget`, `epochs`; `dev_ranking`: the kept model's).
    All trainer files go under `output_dir` (the job directory), none into the working directory.
    Every setting comes from the `finetune` config (runner/stages/finetune/schema.py holds the defaults).
    """
    from runner.stages.finetune import budget as time_budget
    from runner.stages.finetune.epochs import planned

    started = time.perf_counter()  # the time budget counts from here: filtering and mining spend it too
    report = report if report is not None else {}
    # 1. The (anchor, positive) rows, checked against the loss and the batch size
    rows = training_rows(pairs, loss, batch_size)
    n = len(rows["anchor"])
    output_dir = Path(output_dir)
    precision = resolve_precision(precision, device)
    # 2. The plan: epochs (auto: from the pairs) and steps; the time budget's record starts with it
    epochs, plan = planned(epochs, n, batch_size)
    if plan["setting"] == "auto":
        log.info("finetune: epochs auto -> %g (%s)", epochs, plan["reason"])
    steps_per_epoch, total = planned_steps(n, batch_size, epochs, max_steps)
    budget = time_budget.resolve_budget(time_budget_s, device)
    record = report.setdefault("time_budget", {"budget_s": budget, "setting": time_budget_s})
    record["planned"] = {"steps": total, "epochs": round(total / steps_per_epoch, 3)}
    # 3. A trainer factory (training arguments, loss): the budget's probe trains a few steps with it first
    make_trainer = functools.partial(
        _trainer,
        model_args=training_args(
            output_dir,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=learning_rate,
            warmup_ratio=warmup_ratio,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            seed=seed,
            precision=precision,
            device=device,
            dataloader_num_workers=dataloader_num_workers,
            torch_compile=torch_compile,
            total=total,
            model=model,
        ),
        loss_of=loss_factory(loss, mini_batch_size, matryoshka_dims, scale, directions, hardness_strength),
    )
    # 4. The dataset, less the pairs the base model cannot place (finetune.filter_top_k > 0)
    train_dataset = training_dataset(rows, model, filter_top_k, batch_size, precision, device)
    # 5. Mined hard negatives; they go first when the planned steps with them would not fit the budget
    hard_negatives = dict(hard_negatives or {})
    negatives = int(hard_negatives.get("num") or 0)  # null (auto) is resolved by the pipeline, which knows the pairs
    record["planned"]["hard_negatives"] = negatives
    if negatives > 0:
        negatives = budgeted_negatives(
            negatives, model, train_dataset, make_trainer, budget, started, record, total, steps_per_epoch, batch_size
        )
    if negatives > 0:
        train_dataset = mined(train_dataset, model, negatives, hard_negatives, batch_size, n, precision, device)
        negatives = len(train_dataset.column_names) - 2  # auto falls back to in-batch negatives: 0
    record["hard_negatives"] = negatives
    note_negatives_dropped(report, record, negatives)
    # 6. The rows are final (filtered, mined): the steps an epoch really takes, and how they are batched
    steps_per_epoch, total = planned_steps(len(train_dataset), batch_size, epochs, max_steps)
    sampler, report["batches"] = batch_sampler(train_dataset, model, batch_size, group_by_length, seed)
    # 7. Callbacks: the logged loss (a NaN stops training), the budget's clock, each epoch's dev score
    forward = _ForwardLogs(on_log)
    clock, picker = clock_and_picker(
        model, train_dataset, dev, best_epoch, report, budget, started, record, warmup_ratio, batch_size, total, steps_per_epoch
    )
    callbacks = [forward.callback, clock.callback] + ([picker.callback] if picker is not None else [])
    # 8. Train
    trainer = make_trainer(model, train_dataset, None, callbacks, batch_sampler=sampler)
    run_trainer(trainer, forward, len(train_dataset), total, batch_size, learning_rate, precision, budget, loss)
    # 9. What the budget let train, and the epoch kept: an earlier one only when clearly better on dev
    record_outcome(record, trainer.state.global_step, steps_per_epoch, negatives, started, budget)
    if picker is not None and picker.epochs:
        report["epochs"], report["dev_ranking"] = picker.finish()
        report["epochs"]["best_epoch"] = best_epoch
        log.info("finetune: kept %s", report["epochs"]["reason"])
    report["epochs"]["plan"] = plan
    # 10. Save the model; the trainer's checkpoints are not kept
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    model_dir = output_dir / "model"
    model.save(str(model_dir))
    return Finetuned.sentence_transformer(model_dir, model)


def training_rows(pairs: EmbeddingQAFinetuneDataset, loss: str, batch_size: int) -> dict[str, list[str]]:
    """`pair_rows(pairs)`, once the loss is known and the pairs are enough for in-batch negatives and the batch."""
    if loss not in LOSSES:
        raise RagtuneError(f"finetune.loss={loss} is unknown; use one of {', '.join(LOSSES)}.")
    rows = pair_rows(pairs)
    n = len(rows["anchor"])
    if n < 2:
        raise RagtuneError(
            f"the generator gave {n} training pair(s); in-batch negatives need at least 2. "
            "Use a larger corpus, more questions per chunk, or qa_generator=file."
        )
    if batch_size > n:
        raise RagtuneError(
            f"finetune.batch_size={batch_size} is larger than the {n} training pairs; "
            f"use finetune.batch_size={max(2, min(32, n // 2))} or fewer."
        )
    return rows


def planned_steps(rows: int, batch_size: int, epochs: float, max_steps: int) -> tuple[int, int]:
    """(the steps an epoch takes, the steps planned): `max_steps` when set, else `epochs` epochs of them."""
    steps_per_epoch = math.ceil(rows / batch_size)
    return steps_per_epoch, max_steps if max_steps > 0 else math.ceil(steps_per_epoch * epochs)


def loss_factory(loss, mini_batch_size, matryoshka_dims, scale, directions, hardness_strength) -> Callable:
    """model -> its loss (`build_loss` with these settings): each trainer, the budget probe's too, builds its own."""
    return lambda m: build_loss(
        m,
        loss,
        mini_batch_size,
        list(matryoshka_dims),
        scale=scale,
        directions=list(directions),
        hardness_strength=hardness_strength,
    )


def training_dataset(rows: dict, model, filter_top_k: int, batch_size: int, precision: str, device: str):
    """The rows as a Dataset; with `filter_top_k` > 0, only those the consistency filter keeps."""
    from datasets import Dataset

    train_dataset = Dataset.from_dict(rows)
    if filter_top_k <= 0:
        return train_dataset
    n = len(rows["anchor"])
    with autocast(precision, device):
        train_dataset = consistent_rows(train_dataset, model, filter_top_k, batch_size)
    log.info(
        "finetune: %d of %d pairs kept by the consistency filter (passage in the base model's top %d)",
        len(train_dataset),
        n,
        filter_top_k,
    )
    if len(train_dataset) < batch_size:
        raise RagtuneError(
            f"the consistency filter kept {len(train_dataset)} of {n} pairs, fewer than "
            f"finetune.batch_size={batch_size}; raise finetune.filter_top_k or use finetune.filter_top_k=0."
        )
    return train_dataset


def budgeted_negatives(
    negatives: int,
    model,
    train_dataset,
    make_trainer,
    budget: float | None,
    started: float,
    record: dict,
    steps: int,
    steps_per_epoch: int,
    batch_size: int,
) -> int:
    """`negatives`, or 0 when the planned steps with them would not fit the budget (budget.fit_negatives:
    a probe times plain steps; the rows' token lengths scale them to steps with negatives)."""
    from runner.infra.models import word_pieces
    from runner.stages.finetune import budget as time_budget

    lengths = {k: word_pieces(model, train_dataset[k][:1000]) for k in ("anchor", "positive")}
    return time_budget.fit_negatives(
        negatives,
        budget,
        started,
        lambda: time_budget.probe_step_seconds(make_trainer, model, train_dataset, batch_size),
        record,
        steps=steps,
        steps_per_epoch=steps_per_epoch,
        batch_size=batch_size,
        query_tokens=time_budget.mean_tokens(lengths["anchor"], model.max_seq_length),
        passage_tokens=time_budget.mean_tokens(lengths["positive"], model.max_seq_length),
        texts_to_mine=len(set(train_dataset["anchor"])) + len(set(train_dataset["positive"])),
    )


def note_negatives_dropped(report: dict, record: dict, negatives: int) -> None:
    """Where the pipeline's auto choice of hard negatives did not hold, `report["hard_negatives"]` says why."""
    if "hard_negatives" in report and report["hard_negatives"]["chosen"] != negatives:
        report["hard_negatives"].update(
            chosen=negatives,
            reason=report["hard_negatives"]["reason"]
            + (
                "; dropped to fit finetune.time_budget_s"
                if record.get("gave_up")
                else "; mining would have dropped over half the pairs: in-batch only"
            ),
        )


def clock_and_picker(
    model,
    train_dataset,
    dev: DevScoring | None,
    best_epoch: bool | None,
    report: dict,
    budget: float | None,
    started: float,
    record: dict,
    warmup_ratio: float,
    batch_size: int,
    total: int,
    steps_per_epoch: int,
):
    """(the budget's Clock, the BestEpoch that scores each epoch on dev, or None: then `report["epochs"]`
    says why not). The clock keeps time for the dev scorings too."""
    from runner.stages.finetune import budget as time_budget
    from runner.stages.finetune.epochs import BestEpoch, wanted

    epoch_texts = len(train_dataset) * len(train_dataset.column_names)
    dev_texts = dev.texts if dev is not None else 0
    score_epochs = dev is not None and wanted(best_epoch, dev_texts, epoch_texts, total, steps_per_epoch)
    clock = time_budget.Clock(
        budget,
        started,
        steps_per_epoch,
        record,
        warmup_ratio,
        epoch_evals=math.ceil(total / steps_per_epoch) if score_epochs else 0,
        eval_s_estimate=dev_texts / (batch_size * len(train_dataset.column_names)) * time_budget.FORWARD_SHARE,
    )
    if score_epochs:
        return clock, BestEpoch(model, dev.score, dev.metric, dev.n_resamples, dev.seed, on_eval=clock.eval_done)
    report["epochs"] = {
        "best_epoch": best_epoch,
        "chosen": round(total / steps_per_epoch, 3),
        "reason": (
            "no dev split"
            if dev is None
            else f"finetune.best_epoch={best_epoch}"
            if best_epoch is not None
            else "one epoch or less: nothing to choose"
            if total <= steps_per_epoch
            else f"not scored: the dev split ({dev_texts} texts) costs more than half an epoch ({epoch_texts} texts) to encode"
        ),
    }
    return clock, None


def run_trainer(
    trainer,
    forward: _ForwardLogs,
    rows: int,
    steps: int,
    batch_size: int,
    learning_rate: float,
    precision: str,
    budget: float | None,
    loss: str,
) -> None:
    """`trainer.train()`, logged; out of memory and a NaN loss stop the run with what to change."""
    log.info(
        "finetune: %d rows, %d steps, batch %d, lr %g, %s%s",
        rows,
        steps,
        batch_size,
        learning_rate,
        precision,
        f", time budget {budget:.0f} s" if budget else "",
    )
    run_training(trainer.train, batch_size=batch_size, loss=loss)
    if forward.nan:
        raise RagtuneError(
            f"the training loss became NaN (finetune.learning_rate={learning_rate}, precision={precision}); "
            "the model was not saved. Lower finetune.learning_rate or use precision=fp32."
        )


def record_outcome(record: dict, steps: int, steps_per_epoch: int, negatives: int, started: float, budget: float | None) -> None:
    """`choices.time_budget`: the steps and negatives trained, the seconds, and the reason."""
    record.update(
        chosen={"steps": steps, "epochs": round(steps / steps_per_epoch, 3), "hard_negatives": negatives},
        seconds=round(time.perf_counter() - started, 1),
    )
    record["reason"] = (
        f"{steps} steps ({steps / steps_per_epoch:.2f} epochs), {negatives} mined negative(s) a pair, "
        f"in {record['seconds']:.0f} s"
        + (f" of a {budget:.0f} s budget" if budget else " (no budget)")
        + ("; gave up " + "; ".join(record["gave_up"]) if record.get("gave_up") else "")
    )
    log.info("finetune: %s", record["reason"])


@dataclass
class DevScoring:
    """How the trainer scores a model on the dev split (the pipeline builds it: the trainer knows no eval code)."""

    score: Callable  # model -> (ranking, per-query values of `metric`)
    metric: str
    texts: int  # dev corpus + answered queries: what one scoring encodes
    n_resamples: int = 10_000
    seed: int = 0
