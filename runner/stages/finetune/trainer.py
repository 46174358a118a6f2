"""Stage `finetune`: a base model and training pairs in, a saved model directory out.

The directory loads with `SentenceTransformer(path)` and in LlamaIndex with
`Settings.embed_model = ragtune.load_embedding(path)` (its prompts and window kept).
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

from runner.data.pairs import EmbeddingQAFinetuneDataset
from runner.infra.errors import RagtuneError
from runner.infra.models import autocast, resolve_precision, word_pieces
from runner.stages.finetune import budget as time_budget
from runner.stages.finetune.attention import attention_dropout, dropout_record
from runner.stages.finetune.attention import resolve as resolve_attention_dropout
from runner.stages.finetune.epochs import BestEpoch, planned, wanted
from runner.stages.finetune.hf_trainer import _ForwardLogs, _trainer, batch_sampler, run_training, training_args
from runner.stages.finetune.losses import LOSSES, build_loss
from runner.stages.finetune.mining import consistent_rows, mined
from runner.stages.finetune.result import Finetuned
from runner.stages.finetune.schema import SentenceTransformersFinetune

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
    on_log: Callable[[dict, int], None] | None = None,
    dev: DevScoring | None = None,
    report: dict | None = None,
    step_seconds: float | None = None,
    **knobs,
) -> Finetuned:
    """Train `model` in place with MultipleNegativesRankingLoss; save it to `output_dir/model`.

    `knobs`: the `finetune` config's settings (runner/stages/finetune/schema.py, `SentenceTransformersFinetune`,
    holds them with their defaults and what each does), `device` resolved.
    The no-duplicates batch sampler keeps two rows that share a text (two questions about one chunk)
    out of one batch: in-batch negatives that are really positives would teach the wrong thing.
    `group_by_length` batches passages of similar length together (runner.stages.finetune.batching): less padding;
    None (auto) does so only where that gives 1.2x the real passage tokens of random batches.
    `time_budget_s` (runner.stages.finetune.budget) fits mined negatives and epochs into the time given; `best_epoch`
    with `dev` (runner.stages.finetune.epochs) keeps an earlier epoch whose expected score on the dev split is higher. What
    both decided goes into `report` (`time_budget`, `epochs`; `dev_ranking`: the kept model's). `step_seconds`:
    a plain step's seconds measured already at this window (the window's choice probed it to decide): the
    budget decides the negatives on that measurement, so the two choices cannot contradict each other.
    All trainer files go under `output_dir` (the job directory), none into the working directory.
    """
    started = time.perf_counter()  # the time budget counts from here: filtering and mining spend it too
    s = settings_of(knobs)
    report = report if report is not None else {}
    output_dir = Path(output_dir)
    # 1-3. The rows, the plan (epochs, steps) and a trainer factory; the time budget's record starts with the plan
    plan = schedule(model, pairs, output_dir, s)
    if plan.epochs_record["setting"] == "auto":
        log.info("finetune: epochs auto -> %g (%s)", plan.epochs, plan.epochs_record["reason"])
    rows, precision, budget = plan.rows, plan.precision, plan.budget
    steps_per_epoch, total, batch_size = plan.steps_per_epoch, plan.total, s.batch_size
    record = report.setdefault("time_budget", {"budget_s": budget, "setting": s.time_budget_s})
    record["planned"] = {"steps": total, "epochs": round(total / steps_per_epoch, 3)}
    # 4-8 run without attention dropout on a CPU (finetune.attention_dropout: the fused attention kernel)
    dropout = resolve_attention_dropout(s.attention_dropout, s.device)
    with attention_dropout(model, dropout) as own:
        report["attention_dropout"] = dropout_record(s.attention_dropout, dropout, own)
        # 4. The dataset, less the pairs the base model cannot place (finetune.filter_top_k > 0)
        train_dataset = training_dataset(rows, model, s.filter_top_k, batch_size, precision, s.device)
        # 5. Mined hard negatives; they go first when the planned steps with them would not fit the budget
        train_dataset, negatives = with_negatives(
            train_dataset, model, s, plan, record=record, started=started, step_seconds=step_seconds
        )
        note_negatives_dropped(report, record, negatives)
        # 6. The rows are final (filtered, mined): the steps an epoch really takes, and how they are batched
        steps_per_epoch, total = planned_steps(len(train_dataset), batch_size, plan.epochs, s.max_steps)
        sampler, report["batches"] = batch_sampler(train_dataset, model, batch_size, s.group_by_length, s.seed)
        # 7. Callbacks: the logged loss (a NaN stops training), the budget's clock, each epoch's dev score
        forward = _ForwardLogs(on_log)
        clock, picker = clock_and_picker(
            model,
            train_dataset,
            dev,
            best_epoch=s.best_epoch,
            report=report,
            budget=budget,
            started=started,
            record=record,
            warmup_ratio=s.warmup_ratio,
            batch_size=batch_size,
            total=total,
            steps_per_epoch=steps_per_epoch,
        )
        if picker is not None and s.keep_epochs:
            picker.keep_to = output_dir / "epochs"
        callbacks = [forward.callback, clock.callback] + ([picker.callback] if picker is not None else [])
        # 8. Train
        trainer = plan.make_trainer(model, train_dataset, None, callbacks, batch_sampler=sampler)
        run_trainer(trainer, forward, len(train_dataset), total, batch_size, s.learning_rate, precision, budget, s.loss)
    # 9. What the budget let train, and the epoch kept: an earlier one where its expected score on dev is higher
    record_outcome(record, trainer.state.global_step, steps_per_epoch, negatives, started, budget)
    if picker is not None and picker.epochs:
        report["epochs"], report["dev_ranking"] = picker.finish()
        report["epochs"]["best_epoch"] = s.best_epoch
        log.info("finetune: kept %s", report["epochs"]["reason"])
    report["epochs"]["plan"] = plan.epochs_record
    # 10. Save the model; the trainer's checkpoints are not kept
    shutil.rmtree(output_dir / "checkpoints", ignore_errors=True)
    model_dir = output_dir / "model"
    model.save(str(model_dir))
    return Finetuned.sentence_transformer(model_dir, model)


@dataclass
class Schedule:
    """What a training run plans before any pair is filtered or mined."""

    rows: dict  # the (anchor, positive) columns
    epochs: float
    epochs_record: dict  # how the epochs were planned (auto: from the pairs)
    steps_per_epoch: int
    total: int  # the planned steps
    budget: float | None  # finetune.time_budget_s resolved, in seconds
    precision: str  # resolved
    make_trainer: Callable  # (model, dataset, max_steps, callbacks, batch_sampler=, batch_size=) -> a trainer


def settings_of(knobs: dict) -> SentenceTransformersFinetune:
    """The `finetune` config's settings as their typed schema (a knob the schema lacks is a TypeError)."""
    return SentenceTransformersFinetune(**{k: v for k, v in knobs.items() if not k.startswith("_")})


def schedule(model, pairs: EmbeddingQAFinetuneDataset, output_dir: Path, s: SentenceTransformersFinetune) -> Schedule:
    """The rows (checked against the loss and the batch), the planned epochs and steps, the budget, and a
    trainer factory (training arguments, loss) that the run, the budget's probe and the window's cost share."""
    rows = training_rows(pairs, s.loss, s.batch_size)
    precision = resolve_precision(s.precision, s.device)
    epochs, epochs_record = planned(s.epochs, len(rows["anchor"]), s.batch_size)
    steps_per_epoch, total = planned_steps(len(rows["anchor"]), s.batch_size, epochs, s.max_steps)
    make_trainer = functools.partial(
        _trainer,
        model_args=training_args(
            output_dir,
            epochs=epochs,
            max_steps=s.max_steps,
            batch_size=s.batch_size,
            learning_rate=s.learning_rate,
            warmup_ratio=s.warmup_ratio,
            weight_decay=s.weight_decay,
            max_grad_norm=s.max_grad_norm,
            seed=s.seed,
            precision=precision,
            device=s.device,
            dataloader_num_workers=s.dataloader_num_workers,
            torch_compile=s.torch_compile,
            total=total,
            model=model,
        ),
        loss_of=loss_factory(s.loss, s.mini_batch_size, s.matryoshka_dims, s.scale, s.directions, s.hardness_strength),
    )
    budget = time_budget.resolve_budget(s.time_budget_s, s.device)
    return Schedule(rows, epochs, epochs_record, steps_per_epoch, total, budget, precision, make_trainer)


# the finetune settings that decide what training costs at a window (the choice's cache key holds them)
COST_KNOBS = (
    "loss", "mini_batch_size", "matryoshka_dims", "directions", "epochs", "max_steps", "batch_size", "time_budget_s",
    "dataloader_num_workers", "torch_compile", "precision", "attention_dropout",
)  # fmt: skip


def training_cost(model, pairs: EmbeddingQAFinetuneDataset, window: int, *, negatives: int, settings: dict) -> dict:
    """What the planned training (`settings`: the finetune config's knobs, `device` resolved) with `negatives` mined passages per
    pair would take at `window` word pieces, measured by the time budget's probe (a few steps on a copy of the
    model) before anything trains: {window, budget_s, seconds_per_plain_step, negatives_step_factor,
    mining_s_estimate, training_s_estimate, fits}. The consistency filter, length grouping and the dev
    scorings are left out: the estimate is the unfiltered plan's. `model.max_seq_length` is put back."""
    import tempfile

    from datasets import Dataset

    s = settings_of(settings)
    own = model.max_seq_length
    try:
        model.max_seq_length = window
        dropout = resolve_attention_dropout(s.attention_dropout, s.device)
        with tempfile.TemporaryDirectory(prefix="ragtune-probe-") as tmp, attention_dropout(model, dropout):
            plan = schedule(model, pairs, Path(tmp), s)
            step_s = time_budget.probe_step_seconds(plan.make_trainer, model, Dataset.from_dict(plan.rows), s.batch_size)
        lengths = {k: word_pieces(model, plan.rows[k][:1000]) for k in ("anchor", "positive")}
    finally:
        model.max_seq_length = own
    out = {"window": window, "budget_s": plan.budget}
    if not math.isfinite(step_s):  # too few rows to time two steps
        return {**out, "seconds_per_plain_step": None, "fits": True}
    cost = time_budget.projection(
        step_s,
        negatives=negatives,
        steps=plan.total,
        query_tokens=time_budget.mean_tokens(lengths["anchor"], window),
        passage_tokens=time_budget.mean_tokens(lengths["positive"], window),
        texts_to_mine=len(set(plan.rows["anchor"])) + len(set(plan.rows["positive"])),
        batch_size=s.batch_size,
    )
    fits = plan.budget is None or cost["training_s_estimate"] <= plan.budget
    return {**out, **cost, "fits": fits}


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


def with_negatives(
    train_dataset,
    model,
    s: SentenceTransformersFinetune,
    plan: Schedule,
    *,
    record: dict,
    started: float,
    step_seconds: float | None,
):
    """(the rows with their mined negatives, how many a pair has): `finetune.hard_negatives.num` of them, or
    none when the planned steps with them would not fit the budget (`budgeted_negatives`) or mining finds
    too few. `record`: the time budget's."""
    hard_negatives = dict(s.hard_negatives or {})
    negatives = int(hard_negatives.get("num") or 0)  # null (auto) is resolved by the pipeline, which knows the pairs
    record["planned"]["hard_negatives"] = negatives
    if negatives > 0:
        negatives = budgeted_negatives(
            negatives,
            model,
            train_dataset,
            plan.make_trainer,
            budget=plan.budget,
            started=started,
            record=record,
            steps=plan.total,
            steps_per_epoch=plan.steps_per_epoch,
            batch_size=s.batch_size,
            step_seconds=step_seconds,
        )
    if negatives > 0:
        rows = len(plan.rows["anchor"])
        train_dataset = mined(train_dataset, model, negatives, hard_negatives, s.batch_size, rows, plan.precision, s.device)
        negatives = len(train_dataset.column_names) - 2  # auto falls back to in-batch negatives: 0
    record["hard_negatives"] = negatives
    return train_dataset, negatives


def budgeted_negatives(
    negatives: int,
    model,
    train_dataset,
    make_trainer,
    *,
    budget: float | None,
    started: float,
    record: dict,
    steps: int,
    steps_per_epoch: int,
    batch_size: int,
    step_seconds: float | None = None,
) -> int:
    """`negatives`, or 0 when the planned steps with them would not fit the budget (budget.fit_negatives:
    a probe times plain steps, unless `step_seconds` were measured already; the rows' token lengths scale
    them to steps with negatives)."""
    lengths = {k: word_pieces(model, train_dataset[k][:1000]) for k in ("anchor", "positive")}

    def probe() -> float:
        if step_seconds is not None:
            record["probe_by"] = "the window's choice (choices.max_seq_length.training_cost)"
            return step_seconds
        record["probe_by"] = "the finetune stage"
        return time_budget.probe_step_seconds(make_trainer, model, train_dataset, batch_size)

    return time_budget.fit_negatives(
        negatives,
        budget,
        started,
        probe,
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
    *,
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
