"""Check a composed config before any work starts, and report every problem at once.

Types and key names are checked by the schemas at compose time; each stage's `schema.problems` checks
what its types cannot say (ranges, files that must exist, choices that do not fit together), and this
module runs them in pipeline order, then checks the top-level knobs.
"""

from __future__ import annotations

import importlib.util
import re
import sys

from omegaconf import DictConfig, OmegaConf

from runner.infra.code_deps import targets
from runner.infra.errors import RagtuneError
from runner.stages.chunk import schema as chunk
from runner.stages.evaluate import schema as evaluate
from runner.stages.export import schema as export
from runner.stages.finetune import schema as finetune
from runner.stages.generate import schema as generate
from runner.stages.load import schema as load
from runner.stages.ship import schema as ship
from runner.stages.split import schema as split

METRIC_RE = re.compile(r"^(base|finetuned|delta|verdict)/(hit_rate|precision|recall|mrr|ndcg|map)@(\d+)$")
STAGES = (load, chunk, split, generate, finetune, evaluate, ship, export)  # pipeline order
EXTRAS = {"llama_index.llms.": "llm"}  # module prefix -> the pyproject extra that installs it


def missing_values(cfg: DictConfig) -> list[str]:
    """A mandatory value left unset (`???`: corpus=directory without corpus.path), as a problem that names the
    option it belongs to; Hydra would only fail where the value is first read, after the model loads."""
    choices = {}
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            choices = dict(HydraConfig.get().runtime.choices)
    except Exception:  # noqa: BLE001 - composed without Hydra's runtime (tests): no option names
        pass
    out = []
    for key in sorted(OmegaConf.missing_keys(cfg)):
        group = key.split(".")[0]
        by = f" by {group}={choices[group]}" if choices.get(group) else ""
        out.append(f"{key} is required{by} and has no value: give it on the command line ({key}=...)")
    return out


def config_problems(cfg: DictConfig) -> list[str]:
    """Every problem of the config: each stage's, in pipeline order, then the top level's. A mandatory value
    left unset is reported alone: the other checks would read it."""
    missing = missing_values(cfg)
    if missing:
        return missing
    p = [problem for stage in STAGES for problem in stage.problems(cfg)]
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.device):
        p.append(f"device={cfg.device} is not one of auto, cpu, cuda, cuda:N, mps")
    if cfg.precision not in ("auto", "fp32", "fp16", "bf16"):
        p.append(f"precision={cfg.precision} is not one of auto, fp32, fp16, bf16")
    if "mode" in cfg.logger and cfg.logger.mode not in ("auto", "online", "offline", "disabled"):
        p.append(f"logger.mode={cfg.logger.mode} is not one of auto, online, offline, disabled")
    return p + metric_problems(cfg) + backend_problems(cfg)


def installed(module: str) -> bool:
    """Whether `module` can be found, without importing it or its parents (`importlib.util.find_spec` imports
    every parent: llama_index.core alone costs over a second before any problem could be said): the top package
    by `find_spec` (cheap: no parent), the rest as folders and files below it."""
    from pathlib import Path

    top, *rest = module.split(".")
    spec = sys.modules[top].__spec__ if top in sys.modules else importlib.util.find_spec(top)
    if spec is None:
        return False
    if not rest:
        return True
    for location in spec.submodule_search_locations or []:
        folder = Path(location).joinpath(*rest[:-1])
        leaf = rest[-1]
        if (folder / leaf).is_dir() or (folder / f"{leaf}.py").is_file() or any(folder.glob(f"{leaf}.*.so")):
            return True
    return False


def backend_problems(cfg: DictConfig) -> list[str]:
    """Every `_target_` of the config must be importable: an option whose backend is an extra that was not
    installed (`pip install ragtune` without `[llm]`) is named with the install that fixes it."""
    p = []
    for key, target in targets(OmegaConf.to_container(cfg, resolve=False)):
        module = target.rpartition(".")[0]
        if not installed(module):
            extra = next((e for prefix, e in EXTRAS.items() if module.startswith(prefix)), None)
            fix = f"pip install 'ragtune[{extra}]'" if extra else "install the package that provides it, or choose another option"
            p.append(f"{key}._target_={target} cannot be imported: {module} is not installed; {fix}")
    return p


def metric_problems(cfg: DictConfig) -> list[str]:
    """optimized_metric must be one the evaluate engine computes: a top-level knob, checked here against the
    evaluate stage's engine and cut-offs."""
    m = METRIC_RE.match(cfg.optimized_metric)
    if cfg.evaluate.engine == "llama_index":
        k = cfg.evaluate.llama_index_top_k
        from runner.stages.evaluate.llama_index_eval import METRICS

        if not m or m.group(2) not in METRICS or int(m.group(3)) != k:
            return [
                f"optimized_metric={cfg.optimized_metric} is not computed by evaluate.engine=llama_index, "
                f"which gives {', '.join(f'{n}@{k}' for n in METRICS)} (evaluate.llama_index_top_k={k}); "
                f"use optimized_metric=finetuned/ndcg@{k}"
            ]
    elif not m or f"{m.group(2)}@{m.group(3)}" not in evaluate.metric_names(cfg.evaluate):
        return [
            f"optimized_metric={cfg.optimized_metric} is not a metric this run computes; use "
            f"base/, finetuned/, delta/ or verdict/ (the shipped row) and one of "
            f"{', '.join(sorted(evaluate.metric_names(cfg.evaluate)))}"
        ]
    return []


def validate(cfg: DictConfig) -> None:
    problems = config_problems(cfg)
    if problems:
        raise RagtuneError(
            f"the config has {len(problems)} problem(s): "
            + "; ".join(problems)
            + ". Fix them on the command line or in conf/, then run again."
        )
