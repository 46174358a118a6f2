"""`python -m runner` (and the `ragtune` console script): compose the config, run one experiment.

Only hydra and the schemas are imported here, so `--cfg job` answers without loading torch.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from runner.infra.errors import RagtuneError
from runner.infra.secrets import literal_secret_override
from runner.config import register

register()


def conf_dir() -> str:
    """The config tree: conf/ at the top of the repo, installed inside the wheel as `runner.conf` (an
    editable install maps it back to the repo's folder); a bare checkout on PYTHONPATH reads conf/ itself."""
    from importlib.util import find_spec

    spec = find_spec("runner.conf")  # a folder without __init__.py: a namespace package, found by its path
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / "config.yaml").is_file():
            return str(Path(folder).resolve())
    return str(Path(__file__).resolve().parent.parent / "conf")


CONF_DIR = conf_dir()
log = logging.getLogger("ragtune")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    from runner.checks import validate

    try:
        validate(cfg)  # every config problem, before the heavy imports below (torch, llama-index: seconds)
        from runner.pipeline import run

        return run(cfg)
    except RagtuneError as err:
        log.error("%s", err)
        if _in_multirun():  # the sweeper records the job as failed and decides whether to go on
            raise
        # A clean exit: the message above is the whole story, a traceback would bury it.
        raise SystemExit(2) from None


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


# options whose Hydra plugin comes with the `sweeps` extra (pyproject.toml): without it Hydra only says
# "Could not find 'hydra/sweeper/optuna'"
SWEEPS_PLUGINS = {
    "hparams_search=optuna": "hydra_plugins.hydra_optuna_sweeper",
    "hydra/launcher=joblib": "hydra_plugins.hydra_joblib_launcher",
    "hydra/launcher=submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "hydra/launcher=slurm": "hydra_plugins.hydra_submitit_launcher",
}


def missing_plugin(argv: list[str]) -> str | None:
    """The message for an option on the command line whose plugin is not installed, or None."""
    import importlib.util

    for arg in argv:
        module = SWEEPS_PLUGINS.get(arg)
        if module and importlib.util.find_spec(module) is None:
            return (
                f"{arg} needs a Hydra plugin ({module.split('.')[-1]}) that is not installed; install it with "
                "pip install 'ragtune[sweeps]' (make install has it), or leave the option out to run one job here."
            )
    return None


def cli() -> None:
    """`ragtune ARGS` runs an experiment like `python -m runner ARGS`; `ragtune cache ...` manages the
    stage cache like `python -m runner.cache ...`; `ragtune --help` lists the groups and knobs."""
    if sys.argv[1:2] == ["cache"]:
        from runner.cache import main as cache_main

        return cache_main(sys.argv[2:])
    if sys.argv[1:2] in (["--help"], ["-h"]):  # the real groups, one line each (runner/help.py)
        from runner.help import help_text

        sys.stdout.write(help_text(CONF_DIR))
        return None
    if message := missing_plugin(sys.argv[1:]) or literal_secret_override(sys.argv[1:]):
        sys.stderr.write(f"ragtune: {message}\n")
        raise SystemExit(2)
    from runner.advice import advice

    if message := advice(sys.argv[1:], CONF_DIR):  # an override that does not compose, said ragtune's way
        sys.stderr.write(f"ragtune: {message}\n")
        raise SystemExit(2)
    main()


if __name__ == "__main__":
    sys.exit(cli())
