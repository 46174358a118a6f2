"""Experiment trackers: W&B, or nothing. Built by `instantiate(cfg.logger)`.

Each job starts one run and finishes it in the runner's `finally`, so a multirun never merges
jobs into one W&B run (wandb's default `reinit` would hand back the previous run).
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger("ragtune")


class NullTracker:
    """logger=none: results.json and run.log only."""

    run_dir: Path | None = None

    def start(self, config: dict, run_dir: Path, name: str, state_dir: Path) -> None:
        pass

    def log(self, metrics: dict, step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def finish(self, exit_code: int = 0) -> None:
        pass


def wandb_credentials_present() -> bool:
    """WANDB_API_KEY, or a netrc entry for the W&B host (what `wandb login` writes)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbTracker:
    """One W&B run per job. mode=auto: online with credentials, else offline (and says how to sync)."""

    def __init__(self, project: str = "ragtune", entity: str | None = None, mode: str = "auto",
                 group: str | None = None, job_type: str = "finetune", tags: list | None = None):
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.job_type, self.tags = group, job_type, list(tags or [])
        self.run = None

    def _mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "online" if wandb_credentials_present() else "offline"

    def start(self, config: dict, run_dir: Path, name: str, state_dir: Path) -> None:
        # wandb's cache, data and settings under outputs/, not in the user's home directory
        for var, sub in (("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data"),
                         ("WANDB_CONFIG_DIR", "config"), ("WANDB_ARTIFACT_DIR", "artifacts")):
            os.environ.setdefault(var, str(state_dir / sub))
        import wandb

        mode = self._mode()
        kwargs = dict(project=self.project, entity=self.entity, group=self.group, job_type=self.job_type,
                      tags=self.tags, name=name, config=config, dir=str(run_dir),
                      reinit="finish_previous")
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as err:  # a tracker that is down must not cost the run its results
            if mode != "online":
                raise
            log.warning("W&B online init failed (%s); logging offline instead", err)
            mode = "offline"
            self.run = wandb.init(mode=mode, **kwargs)
        if mode == "offline":
            log.info("W&B: no credentials or mode=offline, logging offline; upload later with: "
                     "wandb sync %s", self.run.dir.rsplit("/files", 1)[0] if self.run.dir else run_dir)

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is not None:
            self.run.log(metrics, step=step)

    def summary(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
