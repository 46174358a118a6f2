"""hydra-optuna-sweeper, made resumable: `n_trials` is the study's total, not a batch to add.

The study lives in SQLite under the sweep dir (conf/hparams_search/optuna.yaml), so the same
command run again after an interruption continues the search: it runs only the trials still
missing, numbers their job dirs after the existing ones, and marks trials that a killed sweep
left RUNNING as failed (their jobs never reported).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List

try:
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # installed without ragtune[sweeps]: no Optuna to resume; a plain class is no Hydra plugin,
    OptunaSweeper = object  # so Hydra registers nothing here instead of warning on every command

log = logging.getLogger("ragtune")


class ResumableOptunaSweeper(OptunaSweeper):
    def sweep(self, arguments: List[str]) -> None:
        import optuna

        impl = self.sweeper
        storage = impl.storage
        if isinstance(storage, str) and storage.startswith("sqlite:///"):
            Path(storage[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        done = 0
        if storage and impl.study_name:
            try:
                study = optuna.load_study(study_name=impl.study_name, storage=storage)
            except KeyError:  # a new study
                study = None
            if study is not None:
                for t in study.get_trials(deepcopy=False):
                    if t.state == optuna.trial.TrialState.RUNNING:
                        study._storage.set_trial_state(t._trial_id, optuna.trial.TrialState.FAIL)
                    else:
                        done += 1
        todo = max(0, impl.n_trials - done)
        log.info("optuna study %s: %d trial(s) done, %d to run for n_trials=%d", impl.study_name, done, todo, impl.n_trials)
        impl.n_trials, impl.job_idx = todo, done
        if done:
            _advance_seed(impl.sampler, done)
        impl.sweep(arguments)


def _advance_seed(sampler, done: int) -> None:
    """A seeded sampler restarted from its seed proposes its first trials again (TPE's startup
    trials are random draws): derive a new seed from (seed, trials done) so a resumed search
    goes on deterministically without repeating itself. Reaches into optuna 2.10's samplers."""
    import numpy as np

    rng = getattr(sampler, "_rng", None)
    if not isinstance(rng, np.random.RandomState):
        return
    seed = (int(rng.randint(2**31 - 1)) + done) % (2**31 - 1)
    rng.seed(seed)
    inner = getattr(getattr(sampler, "_random_sampler", None), "_rng", None)
    if isinstance(inner, np.random.RandomState):
        inner.seed(seed + 1)
