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

from runner.infra.errors import first_line

log = logging.getLogger("ragtune")


class NullTracker:
    """logger=none: results.json and run.log only."""

    def start(self, config: dict, run_dir: Path, name: str, group: str, state_dir: Path, objective: str) -> None:
        pass

    def log(self, metrics: dict, step: int | None = None) -> None:
        pass

    def summary(self, metrics: dict) -> None:
        pass

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        pass

    def log_model(self, model_dir: Path) -> None:
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


STATE_DIRS = (
    ("WANDB_CACHE_DIR", "cache"),
    ("WANDB_DATA_DIR", "data"),
    ("WANDB_CONFIG_DIR", "config"),
    ("WANDB_ARTIFACT_DIR", "artifacts"),
)


class WandbTracker:
    """One W&B run per job. mode=auto: online with credentials, else offline (and says how to sync).

    An online init that fails (server down, network gone) falls back to offline: a tracker that
    is down must never cost a run its results.
    """

    def __init__(
        self,
        project: str = "ragtune",
        entity: str | None = None,
        mode: str = "auto",
        group: str | None = None,
        job_type: str = "finetune",
        tags: list | None = None,
        log_model: bool = False,
        init_timeout: float = 60.0,
    ):
        self.project, self.entity, self.mode = project, entity, mode
        self.group, self.job_type, self.tags = group, job_type, list(tags or [])
        self.upload_model, self.init_timeout = log_model, init_timeout
        self.run = None
        self._saved_env: dict[str, str | None] = {}  # WANDB_*_DIR before start, put back by finish

    def _mode(self) -> str:
        if self.mode != "auto":
            return self.mode
        return "online" if wandb_credentials_present() else "offline"

    def start(self, config: dict, run_dir: Path, name: str, group: str, state_dir: Path, objective: str) -> None:
        # wandb's cache, data and settings under this run's outputs/, not in the user's home directory
        # (a user's own WANDB_*_DIR wins); restored by finish, so a later run in the same process
        # (a sweep's next job, a test) gets its own paths.root, not this one's
        self._saved_env = {var: os.environ.get(var) for var, _ in STATE_DIRS}
        for var, sub in STATE_DIRS:
            os.environ.setdefault(var, str(state_dir / sub))
        import wandb

        mode = self._mode()
        kwargs = dict(
            project=self.project,
            entity=self.entity,
            group=self.group or group,
            job_type=self.job_type,
            tags=self.tags,
            name=name,
            config=config,
            dir=str(run_dir),
            reinit="finish_previous",
            # quiet: no 25-line run summary after the verdict; the run's address is logged below instead
            settings=wandb.Settings(init_timeout=self.init_timeout, quiet=True),
        )
        try:
            self.run = wandb.init(mode=mode, **kwargs)
        except Exception as err:
            if mode != "online":
                raise
            log.warning("W&B online init failed (%s); logging offline instead", first_line(err))
            mode = "offline"
            self.run = wandb.init(mode=mode, **kwargs)
        # the runs table sorts by the objective; train/* curves plot against the trainer's step
        self.run.define_metric("train/*", step_metric="train/global_step")
        self.run.define_metric(objective, summary="last")
        self.run.define_metric("objective", summary="last")
        if mode == "offline":
            log.info(
                "W&B: logging offline (no credentials, or logger.mode=offline); upload later with: wandb sync %s",
                Path(self.run.dir).parent,
            )
        elif getattr(self.run, "url", None):
            log.info("W&B: %s", self.run.url)

    def log(self, metrics: dict, step: int | None = None) -> None:
        if self.run is not None:
            if step is not None:
                metrics = {**metrics, "train/global_step": step}
            self.run.log(metrics)

    def summary(self, metrics: dict) -> None:
        if self.run is not None:
            self.run.summary.update(metrics)

    def table(self, key: str, columns: list[str], rows: list[list]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def log_model(self, model_dir: Path) -> None:
        """logger.log_model=true: the finetuned model as a W&B Artifact of type `model`."""
        if self.run is not None and self.upload_model:
            import wandb

            artifact = wandb.Artifact(f"model-{self.run.id}", type="model", metadata={"path": str(model_dir)})
            artifact.add_dir(str(model_dir))
            self.run.log_artifact(artifact)

    def finish(self, exit_code: int = 0) -> None:
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None
        for var, value in self._saved_env.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
