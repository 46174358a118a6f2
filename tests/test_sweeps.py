"""Sweeps as a user launches them: grids, parallel and submitit launchers, Optuna, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from conftest import ROOT, run_cli

FAST = ["debug=fast", "logger=none"]


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/results.json")}


def test_grid_sweep_runs_every_job_once_and_shares_the_stages(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        "-m",
        *FAST,
        "finetune.learning_rate=1e-3,3e-3",
        "finetune.max_steps=2,3",
        f"hydra.sweep.dir={sweep}",
        f"paths.root={tmp_path / 'outputs'}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    runs = results(sweep)
    assert sorted(name.split("_")[0] for name in runs) == ["0", "1", "2", "3"]
    configs = {(r["config"]["finetune"]["learning_rate"], r["config"]["finetune"]["max_steps"]) for r in runs.values()}
    assert configs == {(1e-3, 2), (1e-3, 3), (3e-3, 2), (3e-3, 3)}
    first = next(r for n, r in runs.items() if n.startswith("0_"))
    assert set(first["cache"].values()) == {"miss"}
    for name, r in runs.items():
        if not name.startswith("0_"):  # every later job: only its own finetune and finetuned eval
            assert r["cache"] == {
                "generate": "hit",
                "dev_set": "hit",
                "eval_set": "hit",
                "choices_before_training": "hit",
                "evaluate_base": "hit",
                "base_embeddings": "hit",
            }, name
    assert (sweep / "compare.csv").is_file()


@pytest.mark.slow
def test_joblib_launcher_runs_jobs_in_parallel_with_a_share_of_the_cores(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        "-m",
        *FAST,
        "finetune.learning_rate=1e-3,3e-3",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        f"paths.root={tmp_path / 'outputs'}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    runs = results(sweep)
    assert len(runs) == 2
    for run in runs.values():
        assert run["machine_share"] == {
            "parallel_jobs": 2,
            "freed_memory": "kept",  # the CI's Linux runs glibc
            "torch_threads": max(1, (os.cpu_count() or 1) // 2),
        }


@pytest.mark.slow
def test_submitit_local_runs_the_jobs_as_subprocesses(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        "-m",
        *FAST,
        "finetune.learning_rate=1e-3,3e-3",
        "hydra/launcher=submitit_local",
        f"hydra.sweep.dir={sweep}",
        f"paths.root={tmp_path / 'outputs'}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert len(results(sweep)) == 2
    assert list((sweep / ".submitit").glob("*/*_submitted.pkl"))  # submitit's own job records


def optuna_cli(tmp_path: Path, n_trials: int, *more: str) -> subprocess.CompletedProcess:
    return run_cli(
        "hparams_search=optuna",
        *FAST,
        f"hydra.sweeper.n_trials={n_trials}",
        "hydra.sweeper.params={finetune.learning_rate:'tag(log, interval(1e-4, 3e-3))',"
        "finetune.batch_size:'choice(8, 16, 32)'}",  # debug=fast trains on about 40 pairs
        f"paths.root={tmp_path}",
        *more,
    )


@pytest.mark.slow
def test_optuna_search_is_seeded_persistent_and_resumes_to_its_total(tmp_path):
    r = optuna_cli(tmp_path, 3)
    assert r.returncode == 0, r.stdout + r.stderr
    r = optuna_cli(tmp_path, 5)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 trial(s) done, 2 to run" in r.stdout + r.stderr
    sweep = tmp_path / "optuna" / "debug"
    study = optuna.load_study(study_name="debug", storage=f"sqlite:///{sweep / 'study.db'}")
    assert len(study.trials) == 5 and all(t.state.name == "COMPLETE" for t in study.trials)
    lrs = [t.params["finetune.learning_rate"] for t in study.trials]
    assert len(set(lrs)) == 5  # the resumed search did not repeat the first trials
    assert sorted(int(p.parent.name.split("_")[0]) for p in sweep.glob("*/results.json")) == [0, 1, 2, 3, 4]
    best = (sweep / "optimization_results.yaml").read_text()
    assert f"best_value: {study.best_value}" in best


@pytest.mark.slow
def test_optuna_records_a_failing_trial_and_goes_on(tmp_path):
    # batch_size 1000 is more than the debug run's pairs: that trial fails with a clear error
    r = optuna_cli(
        tmp_path, 4, "hydra.sweeper.params={finetune.batch_size:'choice(4, 1000)'}", "hydra.sweeper.max_failure_rate=1.0"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    study = optuna.load_study(study_name="debug", storage=f"sqlite:///{tmp_path / 'optuna' / 'debug' / 'study.db'}")
    states = {t.params["finetune.batch_size"]: t.state.name for t in study.trials}
    assert len(study.trials) == 4 and states.get(1000) == "FAIL" and states.get(4) == "COMPLETE"
    assert "finetune.batch_size=1000 is larger than" in r.stdout + r.stderr


@pytest.mark.slow
def test_resume_skips_finished_jobs_after_a_kill(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *FAST, "finetune.max_steps=2,400", f"hydra.sweep.dir={sweep}", f"paths.root={tmp_path / 'o'}", "resume=true"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and not list(sweep.glob("0_*/results.json")):
        time.sleep(0.2)
    time.sleep(2)  # job 1 (400 steps) is training now
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    (done,) = sweep.glob("0_*/results.json")
    assert not list(sweep.glob("1_*/results.json"))
    stamp = done.stat().st_mtime_ns
    r = run_cli(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert done.stat().st_mtime_ns == stamp  # job 0 was skipped, not rerun
    assert "already holds the results of this config, its files and code: skipped" in (done.parent / "run.log").read_text()
    (redone,) = sweep.glob("1_*/results.json")
    assert json.loads(redone.read_text())["config"]["finetune"]["max_steps"] == 400


def test_two_runs_started_at_once_get_two_dirs(tmp_path):
    cmd = [sys.executable, "-m", "runner", *FAST, "finetune=none", f"paths.root={tmp_path}"]
    procs = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(2)]
    assert [p.wait(300) for p in procs] == [0, 0]
    dirs = sorted(p.parent for p in tmp_path.glob("runs/*/*/results.json"))
    assert len(dirs) == 2 and dirs[0] != dirs[1]
