"""W&B done right (names, groups, fallback, secrets), W&B sweep files, and the local compare."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, run_cli
from runner.compare import compare
from wandb_records import read_records, run_contents


def fake_run(root: Path, job: int, lr: float, base: float, tuned: float) -> None:
    d = root / f"{job}_finetune.learning_rate={lr}"
    d.mkdir(parents=True)
    metrics = {
        "base": {"ndcg@10": base},
        "finetuned": {"ndcg@10": tuned},
        "delta": {"ndcg@10": tuned - base},
        "delta_ci95": {"ndcg@10": [tuned - base - 0.01, tuned - base + 0.01]},
    }
    config = {
        "seed": 42,
        "optimized_metric": "finetuned/ndcg@10",
        "paths": {"output_dir": str(d)},
        "finetune": {"learning_rate": lr, "epochs": 1},
    }
    (d / "results.json").write_text(json.dumps({"metrics": metrics, "config": config}))


def test_compare_ranks_runs_and_writes_tables_and_plots(tmp_path):
    for job, (lr, tuned) in enumerate([(1e-5, 0.52), (3e-5, 0.61), (1e-4, 0.47)]):
        fake_run(tmp_path, job, lr, 0.50, tuned)
    text = compare([tmp_path])
    rows = (tmp_path / "compare.csv").read_text().splitlines()
    assert rows[0].split(",")[:3] == ["rank", "run", "finetune.learning_rate"]  # only what was swept
    assert [r.split(",")[1] for r in rows[1:]] == ["#1", "#0", "#2"]  # best first
    assert "seed" not in rows[0] and "epochs" not in rows[0]
    assert "0.6100" in text and "[+0.1000, +0.1200]" in text
    assert (tmp_path / "compare.md").read_text().count("\n") == 5
    for png in ("objective_vs_finetune.learning_rate.png", "base_vs_finetuned.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # the plots name a run by what was swept, not #0 / #1, and draw each gain's interval
    from runner.compare import _objective_error_bars, collect, swept, swept_label

    runs = sorted(collect([tmp_path]), key=lambda r: r["_dir"].name)
    params = swept(runs)
    assert [swept_label(r, params) for r in runs] == ["learning_rate=1e-05", "learning_rate=3e-05", "learning_rate=0.0001"]
    low, high = _objective_error_bars(runs, "finetuned/ndcg@10", [0.52, 0.61, 0.47])
    assert low == pytest.approx([0.01] * 3) and high == pytest.approx([0.01] * 3)
    assert _objective_error_bars(runs, "base/ndcg@10", [0.5] * 3) is None


def test_verdict_objective_ranks_runs_by_the_row_each_one_ships(tmp_path):
    """Runs whose verdicts differ: `verdict/ndcg@10` ranks by the shipped row's score, not the finetuned one's."""
    from runner.report.results import metric_value

    shipped = {0: ("bm25", 0.70), 1: ("hybrid_finetuned", 0.66), 2: ("finetuned", 0.47)}
    for job, (lr, tuned) in enumerate([(1e-5, 0.52), (3e-5, 0.61), (1e-4, 0.47)]):
        fake_run(tmp_path, job, lr, 0.50, tuned)
        f = next(tmp_path.glob(f"{job}_*")) / "results.json"
        r = json.loads(f.read_text())
        deploy, score = shipped[job]
        r["metrics"][deploy] = {**r["metrics"].get(deploy, {}), "ndcg@10": score}
        r["verdict"] = {"deploy": deploy}
        r["config"]["optimized_metric"] = "verdict/ndcg@10"
        f.write_text(json.dumps(r))
    compare([tmp_path])
    rows = [r.split(",") for r in (tmp_path / "compare.csv").read_text().splitlines()]
    assert [r[1] for r in rows[1:]] == ["#0", "#1", "#2"]  # by finetuned/ndcg@10 it would be #1, #0, #2
    assert "verdict/ndcg@10" in rows[0] and [r[-1] for r in rows[1:]] == ["bm25", "hybrid_finetuned", "finetuned"]
    metrics = {"finetuned": {"ndcg@10": 0.6}, "bm25": {"ndcg@10": 0.7}}
    assert metric_value(metrics, "verdict/ndcg@10", "bm25") == 0.7
    assert metric_value(metrics, "verdict/ndcg@10", None) != metric_value(metrics, "verdict/ndcg@10", None)  # NaN


def test_compare_cli_says_when_there_is_nothing_to_compare(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "runner.compare", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "no results.json" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_a_sweep_gets_one_wandb_run_per_job_grouped_and_named_and_ends_with_the_table(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        "-m",
        "debug=fast",
        "logger.mode=offline",
        "finetune.learning_rate=1e-3,3e-3",
        f"hydra.sweep.dir={sweep}",
        f"paths.root={tmp_path / 'outputs'}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 runs ranked by finetuned/ndcg@10" in r.stdout
    assert (sweep / "compare.csv").is_file() and (sweep / "base_vs_finetuned.png").is_file()
    runs = {}
    for f in sweep.glob("*/wandb/offline-run-*/run-*.wandb"):
        (run,) = [rec.run for rec in read_records(f) if rec.WhichOneof("record_type") == "run"]
        runs[run.display_name] = run
    assert set(runs) == {"0:debug=fast,learning_rate=0.001", "1:debug=fast,learning_rate=0.003"}
    assert len({run.run_id for run in runs.values()}) == 2
    assert {run.run_group for run in runs.values()} == {f"sweep-{sweep.parent.name}_{sweep.name}"}


def test_api_keys_never_land_in_run_files_and_wandb_stays_out_of_home(tmp_path):
    secrets = {"WANDB_API_KEY": "wandbfakekey" + "1" * 28, "OPENAI_API_KEY": "sk-fake-openai-key-123456"}
    home = tmp_path / "home"
    home.mkdir()
    r = run_cli(
        "debug=fast",
        "logger.mode=offline",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.root={tmp_path / 'outputs'}",
        env={**secrets, "HOME": str(home)},
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert not [p for p in home.rglob("*") if "wandb" in str(p)]
    assert (tmp_path / "outputs" / ".wandb").is_dir()
    files = [f for f in (tmp_path / "run").rglob("*") if f.is_file()]
    assert any(f.suffix == ".wandb" for f in files) and any(f.name == "results.json" for f in files)
    for f in files:
        data = f.read_bytes()
        for value in secrets.values():
            assert value.encode() not in data, f"{value} found in {f}"
    assert all(v not in r.stdout + r.stderr for v in secrets.values())


@pytest.mark.slow
def test_online_init_failure_falls_back_to_offline_and_keeps_results(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"WANDB_BASE_URL": f"http://127.0.0.1:{port}", "WANDB_API_KEY": "x" * 40}
    r = run_cli(
        "debug=fast",
        "logger.mode=online",
        "logger.init_timeout=3",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.root={tmp_path / 'outputs'}",
        env=env,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "logging offline instead" in (tmp_path / "run" / "run.log").read_text()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["metrics"]["finetuned"]
    (run_file,) = (tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb")
    assert "objective" in run_contents(run_file)["summary"]


def test_log_model_stores_the_model_as_an_artifact(tmp_path):
    r = run_cli(
        "debug=fast",
        "logger.mode=offline",
        "logger.log_model=true",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.root={tmp_path / 'outputs'}",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (run_file,) = (tmp_path / "run").glob("wandb/offline-run-*/run-*.wandb")
    artifacts = [rec.artifact for rec in read_records(run_file) if rec.WhichOneof("record_type") == "artifact"]
    model = [a for a in artifacts if a.type == "model"]
    assert len(model) == 1 and model[0].name.startswith("model-")
    assert any(e.path == "model.safetensors" for e in model[0].manifest.contents)


def test_wandb_sweep_file_parses_and_the_runner_takes_the_agents_arguments(tmp_path):
    sweep = yaml.safe_load((ROOT / "conf" / "wandb_sweep.yaml").read_text())
    assert sweep["metric"] == {"name": "objective", "goal": "maximize"}
    assert sweep["command"] == ["${env}", "${interpreter}", "-m", "runner", "${args_no_hyphens}"]
    # what ${args_no_hyphens} expands to: key=value for one draw of every parameter
    draw = {k: (v["values"][0] if "values" in v else v["min"]) for k, v in sweep["parameters"].items()}
    args = [f"{k}={v}" for k, v in draw.items()]
    r = run_cli(*args, "debug=fast", "logger=none", f"hydra.run.dir={tmp_path}", f"paths.root={tmp_path / 'o'}")
    assert r.returncode == 0, r.stdout + r.stderr
    config = json.loads((tmp_path / "results.json").read_text())["config"]
    for key, value in draw.items():
        group, name = key.split(".")
        assert config[group][name] == pytest.approx(value), key


def test_the_verdict_prints_the_models_path_and_a_clause_a_line(tmp_path):
    """It once printed `deploy finetuned (model model)`, the relative dense_model, and one 600-character line."""
    from runner.report.run_report import verdict_text

    (tmp_path / "model").mkdir()
    spec = {"dense_model": "model", "bm25": None, "fusion": None}
    verdict = {
        "deploy": "finetuned",
        "reason": "the finetuned model (finetuned): ndcg@10 0.5297 on the eval set, and no other retriever is clearly "
        "better; simpler than those it ties with (merged +0.0010 [-0.0020, +0.0040]); clearly better than base "
        "-0.0463 [-0.0710, -0.0239]; bm25 -0.0100 [-0.0200, -0.0010]; not chosen: hybrid_base -0.0040 [-0.0200, +0.0100].",
    }
    lines = verdict_text(verdict, spec, tmp_path).splitlines()
    assert lines[0] == "verdict: deploy finetuned" and lines[1] == f"  model {tmp_path / 'model'}"
    assert lines[3].startswith("  simpler than") and lines[4].startswith("  clearly better than base") and "bm25" in lines[4]
    assert lines[5].startswith("  not chosen: hybrid_base") and max(map(len, lines)) < 200


def test_the_metrics_table_says_which_of_interval_and_p_the_verdict_reads():
    from runner.report.results import metrics_table

    m = {
        "base": {"ndcg@10": 0.50},
        "finetuned": {"ndcg@10": 0.47},
        "delta": {"ndcg@10": -0.033},
        "delta_ci95": {"ndcg@10": [-0.0711, -0.0039]},
        "delta_p": {"ndcg@10": 0.054},
    }
    text = metrics_table(m)
    assert "[-0.0711, -0.0039]" in text and "0.054" in text
    assert "The verdict and every comparison read the 95% interval" in text and "can disagree" in text
    assert "can disagree" not in metrics_table({"base": {"ndcg@10": 0.5}})  # no delta, nothing to reconcile
