"""Shared fixtures: a tiny local model, composed configs, and no network anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.pop("WANDB_API_KEY", None)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer BERT with MiniLM's tokenizer, built locally (the same builder debug=fast uses)."""
    from runner.infra.models import build_tiny_bert

    return build_tiny_bert(tmp_path_factory.mktemp("models") / "tiny-bert")


def compose(overrides: list[str], output_dir: Path, root: Path | None = None, *, hydra: bool = False):
    """The config `python -m runner <overrides>` would run, with its output dir set to `output_dir`
    and `paths.root` (outputs, cache) to `root`, by default inside it; `hydra`: with the `hydra` node
    (sweeper, mode) too."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import open_dict

    from runner.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=hydra)
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
        cfg.paths.root = str(root or output_dir / "outputs")
    return cfg


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """`python -m runner ARGS` in a subprocess, as a user would type it."""
    return subprocess.run(
        [sys.executable, "-m", "runner", *args],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def finetune_settings(tmp_path: Path, *overrides: str, **values) -> dict:
    """The keyword arguments the runner gives `train_sentence_transformers` (the composed `finetune` config,
    schema defaults and all), on the CPU, with `values` on top: tests call the trainer as the runner does."""
    from omegaconf import OmegaConf

    cfg = compose(["device=cpu", *overrides], tmp_path / "settings")
    settings = OmegaConf.to_container(cfg.finetune, resolve=True)
    return {k: v for k, v in settings.items() if not k.startswith("_")} | values


def fast(tiny_model: Path, *more: str) -> list[str]:
    """Overrides for a debug=fast run on the fixture's tiny model, logging offline (or not at all)."""
    logger = [] if "logger=none" in more else ["logger.mode=offline"]
    return ["debug=fast", f"base_model.name_or_path={tiny_model}", *logger, *more]
