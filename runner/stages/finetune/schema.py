"""The `base_model` and `finetune` groups' schemas (one per option in conf/finetune/), and the checks of
the finetune methods' knobs. `base_model.max_seq_length: auto` is chosen, and so checked, by the evaluate
stage (runner/stages/evaluate/schema.py).

Kept cheap to import: `python -m runner --cfg job` reads these through `runner.config`; the checks import
the trainer's modules only when they run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from omegaconf import MISSING


@dataclass
class BaseModel:
    name_or_path: str = MISSING
    revision: Optional[str] = None  # a hub model's branch, tag or commit: pin it for runs you can repeat
    # word pieces; auto: chosen on every training-side question (runner/stages/evaluate/seq_length.py; prior: the
    # longest candidate, the window that reads the passages whole); None: the model's own
    max_seq_length: Any = None
    query_prompt: str = ""
    passage_prompt: str = ""
    trust_remote_code: bool = False
    build: Optional[str] = None  # "tiny_bert": build a tiny random model at name_or_path if missing


@dataclass
class HardNegatives:
    # mined per pair with the base model; 0: in-batch negatives only; null (auto): 1 for pairs read from a
    # file (qa_generator=file: labelled ones, or generated earlier), 0 for pairs generated in the run
    num: Optional[int] = None
    relative_margin: float = 0.05  # a negative scores below (1 - margin) x the positive's score
    range_max: int = 50  # candidates considered per query


@dataclass
class SentenceTransformersFinetune:
    _target_: Optional[str] = "runner.stages.finetune.trainer.train_sentence_transformers"
    _partial_: bool = True
    loss: str = "mnrl"  # mnrl | cached_mnrl | matryoshka
    mini_batch_size: int = 32  # cached_mnrl: the memory-bound part of a large batch
    matryoshka_dims: List[int] = field(default_factory=lambda: [384, 256, 128, 64])
    scale: float = 20.0  # MNRL's 1 / temperature
    directions: List[str] = field(default_factory=lambda: ["query_to_doc"])  # + doc_to_query: symmetric
    hardness_strength: float = 0.0  # > 0: weight in-batch negatives by hardness (Lan et al. 2025 use 9)
    hard_negatives: HardNegatives = field(default_factory=HardNegatives)
    filter_top_k: int = 0  # > 0: keep a pair only if the base model ranks its passage in the top k (consistency filter)
    epochs: Any = "auto"  # auto: from the number of pairs (runner/stages/finetune/epochs.py, docs/auto.md); a number fixes it
    max_steps: int = -1  # > 0 overrides epochs
    batch_size: int = 32
    learning_rate: float = 5e-5
    group_by_length: Optional[bool] = None  # batch passages of similar length; null: only where it pays (README)
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0  # clip the gradient's norm to this (transformers' default); 0: no clipping
    # seconds for the finetune stage; auto: 900 on a CPU, 3600 on a GPU; null: no budget. Over budget, mined
    # negatives go first, then epochs (runner/stages/finetune/budget.py); a budget that cannot fit one epoch stops the run
    time_budget_s: Any = "auto"
    best_epoch: Optional[bool] = None  # score each epoch on dev, keep the best expected; null: where scoring is cheap
    keep_epochs: bool = False  # save every epoch the dev split scored under <run>/epochs/<epoch>/, to score or ship later
    dataloader_num_workers: int = 0  # tokenizing in worker processes: helps a GPU that waits on the CPU
    torch_compile: bool = False  # torch.compile the model: faster steps on GPUs after a compile warm-up
    # dropout on attention probabilities while training; auto: 0 on a CPU (the fused attention kernel runs only
    # without it: 2.8x faster a step at 384 tokens, 5.8x at 512), the model's own on a GPU; null: the model's own
    attention_dropout: Any = "auto"
    seed: int = "${seed}"  # type: ignore[assignment]
    precision: str = "${precision}"
    device: str = "${device}"


@dataclass
class LlamaIndexFinetune:
    _target_: Optional[str] = "runner.stages.finetune.llama_index_engines.train_llama_index_engine"
    _partial_: bool = True
    epochs: int = 1
    batch_size: int = 10
    seed: int = "${seed}"  # type: ignore[assignment]
    base_model_path: str = "${base_model.name_or_path}"  # the engine loads the base model by path


@dataclass
class AdapterFinetune:
    _target_: Optional[str] = "runner.stages.finetune.llama_index_engines.train_adapter"
    _partial_: bool = True
    adapter: str = "linear"  # linear | two_layer
    hidden_features: int = 1024  # two_layer only
    epochs: int = 1
    batch_size: int = 10
    learning_rate: float = 1e-3  # the engine's own default, 2e-5, barely moves an adapter that starts as identity
    seed: int = "${seed}"  # type: ignore[assignment]
    base_model_path: str = "${base_model.name_or_path}"  # the engine loads the base model by path
    base_model_revision: Optional[str] = "${base_model.revision}"  # ... at the revision the run scores


@dataclass
class NoFinetune:
    _target_: Optional[str] = None  # evaluate the base model only


FINETUNE = {
    "sentence_transformers": SentenceTransformersFinetune,
    "llama_index": LlamaIndexFinetune,
    "adapter": AdapterFinetune,
    "none": NoFinetune,
}


def method(ft) -> str | None:
    """Which `finetune` option `ft` is (a FINETUNE name), by its declared `_target_`; None: finetune=none."""
    from runner.infra.options import option_of

    return option_of(ft, FINETUNE)


def problems(cfg) -> list[str]:
    """What the `finetune` types cannot say. Each method has its own knobs: check those it has."""
    ft = cfg.finetune
    if not ft.get("_target_"):  # finetune=none: nothing trains
        return []
    return _schedule_problems(ft) + _loss_problems(ft) + _resource_problems(ft)


def _schedule_problems(ft) -> list[str]:
    p: list[str] = []
    if "learning_rate" in ft and not ft.learning_rate > 0:
        p.append(f"finetune.learning_rate={ft.learning_rate} must be positive (try 5e-5)")
    if ft.epochs != "auto" and (isinstance(ft.epochs, (bool, str)) or not ft.epochs > 0) and not ft.get("max_steps", -1) > 0:
        p.append(f"finetune.epochs={ft.epochs} must be a positive number or auto (or set finetune.max_steps)")
    if ft.batch_size < 2:
        p.append(f"finetune.batch_size={ft.batch_size} must be at least 2: in-batch negatives need company")
    if "warmup_ratio" in ft and not 0 <= ft.warmup_ratio < 1:
        p.append(f"finetune.warmup_ratio={ft.warmup_ratio} must be in [0, 1)")
    if ft.get("keep_epochs") and ft.get("best_epoch") is False:
        p.append(
            "finetune.keep_epochs=true saves the epochs the dev split scores, and finetune.best_epoch=false scores "
            "none; set finetune.best_epoch=true (or leave it null) to keep them"
        )
    return p


def _loss_problems(ft) -> list[str]:
    from runner.stages.finetune.losses import LOSSES, directions_problem  # the trainer: only when checking

    p: list[str] = []
    if ft.get("loss") not in (None, *LOSSES):
        p.append(f"finetune.loss={ft.loss} is not one of {', '.join(LOSSES)}")
    if "scale" in ft and not ft.scale > 0:
        p.append(f"finetune.scale={ft.scale} must be positive (1 / temperature; 20 is the usual)")
    if "hardness_strength" in ft and ft.hardness_strength < 0:
        p.append(f"finetune.hardness_strength={ft.hardness_strength} must be 0 (off) or more (try 9)")
    if "directions" in ft and (problem := directions_problem(ft.directions)):
        p.append(problem)
    if "hard_negatives" in ft and ft.hard_negatives.num is not None and ft.hard_negatives.num < 0:
        p.append(
            f"finetune.hard_negatives.num={ft.hard_negatives.num} must be 0 (in-batch negatives only), "
            "1 or more, or null (auto: 1 for pairs from a file)"
        )
    return p


def _resource_problems(ft) -> list[str]:
    p: list[str] = []
    if "weight_decay" in ft and ft.weight_decay < 0:
        p.append(f"finetune.weight_decay={ft.weight_decay} must be 0 or more")
    if "max_grad_norm" in ft and not ft.max_grad_norm >= 0:
        p.append(f"finetune.max_grad_norm={ft.max_grad_norm} must be 0 (no clipping) or more (try 1.0)")
    if "time_budget_s" in ft:
        from runner.stages.finetune.budget import check

        p += check(ft.time_budget_s)
    if "attention_dropout" in ft:
        from runner.stages.finetune.attention import check as check_dropout

        p += check_dropout(ft.attention_dropout)
    if "dataloader_num_workers" in ft and ft.dataloader_num_workers < 0:
        p.append(f"finetune.dataloader_num_workers={ft.dataloader_num_workers} must be 0 or more")
    return p
