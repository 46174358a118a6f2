"""The top-level config schema and Hydra's ConfigStore: every config group's typed schemas, registered.

Each stage folder owns the schemas of its groups, with the checks types cannot express next to them
(``runner/stages/<stage>/schema.py``); this module holds the top level (``Config``, ``paths``, ``cache``,
``logger``), the table of group options (``SCHEMAS``) and the resolvers. Each YAML option in
``conf/<group>/`` starts from one of these dataclasses (its defaults list names ``/schema/<group>/<option>``),
so a misspelled key or a wrong type fails when the config is composed, before any model is loaded.
``runner.checks`` runs every stage's checks, and the top-level ones.

This module must stay cheap to import: ``python -m runner --cfg job`` imports it and nothing heavy.
"""

from __future__ import annotations

import os
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from runner.infra.models import minilm_path
from runner.stages.chunk.schema import CHUNKER
from runner.stages.evaluate.schema import EVAL_SET, EvaluateConfig, MergeConfig
from runner.stages.export.schema import EXPORT
from runner.stages.finetune.schema import FINETUNE, BaseModel
from runner.stages.generate.schema import QA_GENERATOR
from runner.stages.load.schema import CORPUS
from runner.stages.ship.schema import GuardConfig
from runner.stages.split.schema import DevConfig, SplitConfig


# --- logger -------------------------------------------------------------------------------------
@dataclass
class WandbLogger:
    _target_: str = "runner.infra.tracking.WandbTracker"
    project: str = "ragtune"
    entity: Optional[str] = None
    mode: str = "auto"  # auto | online | offline | disabled
    group: Optional[str] = None  # default: the sweep (multirun dir) or the experiment's name
    job_type: str = "finetune"
    tags: List[str] = field(default_factory=list)
    log_model: bool = False  # upload the finetuned model as a W&B Artifact
    init_timeout: float = 60.0  # seconds before an online init gives up and falls back to offline


@dataclass
class NoLogger:
    _target_: str = "runner.infra.tracking.NullTracker"


# --- top level ----------------------------------------------------------------------------------
@dataclass
class PathsConfig:
    root: str = "outputs"
    output_dir: Optional[str] = "${hydra:runtime.output_dir}"  # None only in --cfg job --resolve
    models_dir: str = "${paths.root}/models"  # models the runner builds itself (debug's tiny BERT)


@dataclass
class CacheConfig:
    enabled: bool = True  # reuse the base model's corpus embeddings across runs
    dir: str = "${paths.root}/cache"


@dataclass
class Config:
    # the groups: typed by their own option schemas, so Any here
    corpus: Any = MISSING
    chunker: Any = MISSING
    qa_generator: Any = MISSING
    base_model: Any = MISSING
    finetune: Any = MISSING
    eval_set: Any = MISSING
    logger: Any = MISSING
    export: Dict[str, Any] = field(default_factory=dict)  # target -> its knobs; empty: no export

    name: str = "default"
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    precision: str = "auto"  # auto | fp32 | fp16 | bf16
    optimized_metric: str = "finetuned/ndcg@10"
    secrets_file: Optional[str] = None  # KEY=VALUE lines (e.g. OPENAI_API_KEY) read into the environment
    resume: bool = False  # skip the job when its dir already holds results.json of the same config
    split: SplitConfig = field(default_factory=SplitConfig)
    dev: DevConfig = field(default_factory=DevConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    merge: MergeConfig = field(default_factory=MergeConfig)
    guard: GuardConfig = field(default_factory=GuardConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)


SCHEMAS = {
    "corpus": CORPUS,
    "chunker": CHUNKER,
    "qa_generator": QA_GENERATOR,
    "base_model": {"base_model": BaseModel},
    "finetune": FINETUNE,
    "eval_set": EVAL_SET,
    "logger": {"wandb": WandbLogger, "none": NoLogger},
    "export": EXPORT,
}


def _safe_dirname(overrides: str, limit: int = 100) -> str:
    """A sweep job's override string as one short directory name: path values must not nest
    directories, and a long sweep must not exceed the file system's 255-byte names."""
    import zlib

    name = overrides.replace("/", "-").replace("\\", "-")
    return name if len(name) <= limit else f"{name[: limit - 9]}~{zlib.crc32(name.encode()):08x}"


def register() -> None:
    """Put every schema in the ConfigStore and the resolvers in OmegaConf (idempotent)."""
    cs = ConfigStore.instance()
    cs.store(name="schema_config", node=Config)
    for group, options in SCHEMAS.items():
        for option, node in options.items():
            cs.store(group=f"schema/{group}", name=option, node=node)
    if not OmegaConf.has_resolver("minilm_path"):
        OmegaConf.register_new_resolver("minilm_path", minilm_path)
    if not OmegaConf.has_resolver("pid"):  # two runs started in the same second get two dirs
        OmegaConf.register_new_resolver("pid", os.getpid)
    if not OmegaConf.has_resolver("secret"):  # ${secret:OPENAI_API_KEY,default}: runner/infra/secrets.py
        from runner.infra.secrets import secret

        OmegaConf.register_new_resolver("secret", secret)
    if not OmegaConf.has_resolver("ragtune_data"):  # files that ship inside the package (runner/data/)
        OmegaConf.register_new_resolver("ragtune_data", lambda name: str(Path(__file__).parent / "data" / name))
    if not OmegaConf.has_resolver("safe_dirname"):
        OmegaConf.register_new_resolver("safe_dirname", _safe_dirname)
