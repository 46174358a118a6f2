"""One job of a run: what its steps share (`Job`), how a step is timed (`stage`), and how the job knows
itself: its number in a sweep, its tracker name and group, an earlier finished run of the same config
(resume)."""

from __future__ import annotations

import json
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig

from runner.infra.stage_cache import StageCache

log = logging.getLogger("ragtune")


@contextmanager
def stage(name: str, timings: dict):
    log.info("[%s] ...", name)
    start = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - start, 3)
    log.info("[%s] done in %.1fs", name, timings[name])


@dataclass
class Job:
    """What every step of one run shares: its config, where it writes, how it computes, what it counted."""

    cfg: DictConfig
    out: Path
    device: str
    precision: str
    metric: str  # the deciding metric: optimized_metric without its base/ finetuned/ delta/ verdict/ prefix
    stages: StageCache
    tracker: object
    timings: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)


def job_number() -> int:
    from hydra.core.hydra_config import HydraConfig

    return int(HydraConfig.get().job.get("num") or 0) if HydraConfig.initialized() else 0


def run_key(config: dict, experiment) -> str:
    """What decides a run's results, as a stage key does for a stage's output: the resolved config (resume,
    logger and credentials aside), the content of every file or folder it names (the corpus, a pairs or eval
    file, a local model), a hub model's commit, the syntax trees of every runner module `experiment` can run
    and the versions of the libraries they import. An edited corpus, pairs file or module is another key."""
    import hashlib

    from runner.infra.code_deps import closure, library_versions, roots_of
    from runner.infra.fingerprint import input_files, model_fingerprint
    from runner.infra.secrets import key_view

    kept = {k: v for k, v in config.items() if k not in ("resume", "logger")}
    deps = closure(roots_of(experiment, config=kept))
    base = config.get("base_model") or {}
    inputs = {k: v for k, v in kept.items() if k not in ("paths", "cache")}  # where it writes is not what it reads
    material = {
        "config": key_view(kept),
        "files": input_files(inputs),
        "model": model_fingerprint(str(base.get("name_or_path")), base.get("revision")) if base else None,
        "code": deps.digest,
        "libraries": library_versions(deps.externals),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]


def finished_result(path: Path, key: str) -> dict | None:
    """results.json of an earlier run with the same `run_key` (the same config, files, code and libraries),
    if any; one from before run keys were recorded is never reused."""
    if not path.is_file():
        return None
    done = json.loads(path.read_text())
    return done if done.get("run_key") == key else None


def run_identity(cfg: DictConfig, out: Path) -> tuple[str, str]:
    """(run name, group) for the tracker: in a sweep, the job's own overrides, grouped by sweep;
    otherwise the run directory's name, grouped by experiment name."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return out.name, cfg.name
    hc = HydraConfig.get()
    sweep = Path(hc.sweep.dir)
    short = []  # finetune.learning_rate=1e-05 -> learning_rate=1e-05
    for o in hc.overrides.task:
        key, _, value = o.partition("=")
        if not key.lstrip("+~").startswith(("logger.", "hydra.", "paths.")):
            short.append(f"{key.split('.')[-1]}={value}")
    name = ",".join(short)[:120] or out.name
    return f"{hc.job.num}:{name}", f"sweep-{sweep.parent.name}_{sweep.name}"
