"""Composition: every option composes, mistakes fail before work starts, composing loads no torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, compose, run_cli
from runner.checks import config_problems

OPTIONS = sorted(
    p.relative_to(ROOT / "conf") for p in (ROOT / "conf").glob("*/*.yaml") if p.parent.name != "debug_finetune"
)  # chosen by config.yaml, not by users


@pytest.mark.parametrize("option", OPTIONS, ids=str)
def test_every_option_composes(option: Path, tmp_path):
    group, name = option.parent.name, option.stem
    extra = {
        "qa_generator=file": ["qa_generator.path=x.json", "eval_set=file", "eval_set.path=y.json"],
        "experiment=labelled": ["qa_generator.path=x.json", "eval_set=file", "eval_set.path=y.json"],
        "eval_set=file": ["eval_set.path=y.json"],
    }.get(f"{group}={name}", [])
    cfg = compose([f"{group}={name}", *extra], tmp_path)
    assert cfg.seed == 42
    text = (ROOT / "conf" / option).read_text()
    assert text.startswith("#") and "python -m runner" in text  # a header that says how to use it


def test_labelled_preset_trains_on_a_file_with_mined_hard_negatives(tmp_path):
    cfg = compose(["experiment=labelled", "qa_generator.path=x.json"], tmp_path)
    assert cfg.qa_generator._target_ == "runner.stages.generate.generators.pairs_from_file"
    assert cfg.finetune.hard_negatives.num == 1 and cfg.finetune.epochs == "auto"


@pytest.mark.parametrize("method", ["sentence_transformers", "none"])
def test_debug_fast_composes_with_every_finetune_method(method, tmp_path):
    cfg = compose(["debug=fast", f"finetune={method}"], tmp_path)
    assert cfg.corpus.max_documents == 6 and cfg.base_model.build == "tiny_bert"
    if method == "sentence_transformers":
        assert cfg.finetune.max_steps == 4
    assert config_problems(cfg) == []


def test_defaults_are_the_documented_ones(tmp_path):
    cfg = compose([], tmp_path)
    assert cfg.corpus._target_ == "runner.stages.load.corpus.load_python_docs"
    assert cfg.chunker._target_.endswith("SentenceSplitter")
    assert cfg.qa_generator._target_ == "runner.stages.generate.generators.ict_pairs"
    assert cfg.finetune._target_ == "runner.stages.finetune.trainer.train_sentence_transformers"
    assert cfg.eval_set.kind == "held_out" and cfg.logger._target_.endswith("WandbTracker")
    assert Path(cfg.base_model.name_or_path, "model.safetensors").is_file()  # the packaged MiniLM
    assert cfg.split.val_fraction == 0.2 and cfg.optimized_metric == "finetuned/ndcg@10"
    assert config_problems(cfg) == []


def test_composing_the_config_imports_no_torch():
    code = (
        "import sys; sys.argv = ['runner', '--cfg', 'job'];"
        "from runner.__main__ import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "finetune:" in out.stdout and out.stdout.strip().endswith("NO-TORCH")


def test_validate_reports_every_problem_at_once(tmp_path):
    cfg = compose(
        ["finetune.learning_rate=-1", "chunker.chunk_overlap=200", "split.val_fraction=1.5", "optimized_metric=finetuned/ndcg@7"],
        tmp_path,
    )
    problems = config_problems(cfg)
    assert len(problems) == 4
    assert any("finetune.learning_rate=-1" in p for p in problems)
    assert any("chunker.chunk_overlap=200" in p for p in problems)
    assert any("split.val_fraction=1.5" in p for p in problems)
    assert any("ndcg@7" in p and "ndcg@10" in p for p in problems)


def test_the_verdicts_row_is_an_objective_a_sweep_can_maximise(tmp_path):
    assert config_problems(compose(["optimized_metric=verdict/ndcg@10"], tmp_path)) == []
    (problem,) = config_problems(compose(["optimized_metric=shipped/ndcg@10"], tmp_path))
    assert "optimized_metric=shipped/ndcg@10" in problem and "verdict/ (the shipped row)" in problem


def test_an_option_whose_extra_is_not_installed_names_the_install(tmp_path):
    cfg = compose(["qa_generator=llm", "qa_generator/llm=ollama", "qa_generator.llm.model=m"], tmp_path)
    assert config_problems(cfg) == []  # make install installs every extra
    cfg.qa_generator.llm._target_ = "llama_index.llms.not_installed.Ollama"  # as without ragtune[llm]
    cfg.chunker._target_ = "my_chunkers.Mine"
    problems = config_problems(cfg)
    assert problems == [
        "chunker._target_=my_chunkers.Mine cannot be imported: my_chunkers is not installed; install the package "
        "that provides it, or choose another option",
        "qa_generator.llm._target_=llama_index.llms.not_installed.Ollama cannot be imported: "
        "llama_index.llms.not_installed is not installed; pip install 'ragtune[llm]'",
    ]


def test_loss_knobs_are_checked_before_any_work(tmp_path):
    cfg = compose(
        [
            "finetune.scale=0",
            "finetune.hardness_strength=-1",
            "finetune.directions=[doc_to_query]",
            "finetune.hard_negatives.num=-1",
        ],
        tmp_path,
    )
    problems = config_problems(cfg)
    assert len(problems) == 4
    assert any("finetune.hard_negatives.num=-1 must be 0" in p and "null (auto" in p for p in problems)
    assert any("finetune.scale=0" in p for p in problems)
    assert any("finetune.hardness_strength=-1" in p for p in problems)
    assert any("finetune.directions=['doc_to_query'] must include query_to_doc" in p for p in problems)
    assert (
        config_problems(
            compose(
                ["finetune.directions=[query_to_doc,doc_to_query]", "finetune.scale=50", "finetune.hardness_strength=9"], tmp_path
            )
        )
        == []
    )


def assert_clean_failure(result: subprocess.CompletedProcess, *needles: str) -> str:
    text = result.stdout + result.stderr
    assert result.returncode != 0, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


def test_unknown_group_option_names_it_and_lists_the_choices():
    assert_clean_failure(run_cli("corpus=wikipedia", "--cfg", "job"), "corpus/wikipedia", "python_docs")


def test_misspelled_key_is_refused_at_compose_time():
    assert_clean_failure(run_cli("finetune.learing_rate=1e-5", "--cfg", "job"), "learing_rate")


def test_wrong_type_is_refused_at_compose_time():
    assert_clean_failure(run_cli("finetune.batch_size=lots", "--cfg", "job"), "lots", "finetune.batch_size")


def test_negative_learning_rate_is_a_clear_error(tmp_path):
    r = run_cli("debug=fast", "logger=none", "finetune.learning_rate=-0.001", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert_clean_failure(r, "finetune.learning_rate=-0.001", "must be positive")
    assert not (tmp_path / "results.json").exists()


def test_missing_eval_file_is_a_clear_error(tmp_path):
    missing = tmp_path / "nope.json"
    r = run_cli("debug=fast", "logger=none", "eval_set=file", f"eval_set.path={missing}", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert_clean_failure(r, f"eval_set.path={missing}", "does not exist")


def test_eval_file_without_relevant_docs_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"queries": {"q": "what?"}, "corpus": {"d": "text"}}))
    r = run_cli("debug=fast", "logger=none", "eval_set=file", f"eval_set.path={bad}", f"hydra.run.dir={tmp_path}")
    assert r.returncode == 2
    assert_clean_failure(r, f"eval_set.path={bad}", "'relevant_docs'")


def test_a_search_preset_sets_its_own_optuna_space(tmp_path):
    """experiment= comes after hparams_search= in the defaults, so a search preset narrows the generic
    space: its knobs are searched, the generic ones it fixes stay fixed."""
    cfg = compose(["experiment=search_offline"], tmp_path, hydra=True)
    params = cfg.hydra.sweeper.params
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.ragtune_sweeper.ResumableOptunaSweeper"
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and cfg.hydra.sweeper.study_name == "search_offline"
    assert params["qa_generator"] == "choice(ict, titles)"
    assert params["finetune.hard_negatives.num"] == "choice(0, 1)"
    assert params["finetune.learning_rate"] == "tag(log, interval(1e-5, 1e-4))"
    assert params["finetune.warmup_ratio"] == "0.1" and params["finetune.batch_size"] == "32"  # fixed by the preset
    assert cfg.corpus.max_documents == 600 and cfg.eval_set.split == "train"


def test_chunk_size_is_a_number_or_auto(tmp_path):
    for bad in ("big", "0", "-5"):
        problems = config_problems(compose([f"chunker.chunk_size={bad}"], tmp_path))
        assert len(problems) == 1 and f"chunker.chunk_size={bad}" in problems[0].replace("'", "")
        assert "or auto" in problems[0]
    assert config_problems(compose(["chunker.chunk_size=auto"], tmp_path)) == []


def test_help_lists_every_group_and_option_of_conf_one_line_each():
    from runner.help import groups

    out = run_cli("--help")
    assert out.returncode == 0, out.stderr
    for group in ("corpus", "chunker", "qa_generator", "base_model", "finetune", "eval_set", "logger", "experiment"):
        assert f"\n  {group}" in out.stdout
        for option in (ROOT / "conf" / group).glob("*.yaml"):
            line = next(x for x in out.stdout.splitlines() if x.strip().lstrip("*").startswith(option.stem + " "))
            assert len(line.split(option.stem, 1)[1].strip()) > 10  # a description, from the file's comment
    assert "debug_finetune" not in out.stdout and "schema" not in out.stdout
    assert "*minilm" in out.stdout and "*sentence_transformers" in out.stdout and "seed=42" in out.stdout
    assert set(groups(ROOT / "conf")) >= {"hydra/launcher", "qa_generator/llm", "guards", "hparams_search"}
    # the verdict's and the choices' knobs, each with its default and what it is, from the schemas
    for knob in ("evaluate.baselines.stopwords=null", "evaluate.baselines.k1=[0.9,1.2,1.5,2.0]", "dev.fraction=0.15",
                 "merge.alphas=[0.25,0.5,0.75]", "guard.tolerance=0.01"):  # fmt: skip
        line = next(x for x in out.stdout.splitlines() if x.strip().startswith(knob))
        assert len(line.split(knob, 1)[1].strip()) > 10, line
    assert "precision=auto" in out.stdout and "bf16 where the CPU or GPU has it" in out.stdout
    # a field written over several lines reads as the others do (it once printed `dense_weights=field(`)
    assert "=field(" not in out.stdout and "evaluate.baselines.dense_weights=[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9]" in out.stdout


def test_the_wheel_carries_conf_and_runs_from_any_folder(tmp_path):
    """`pip install` of the built wheel (here unpacked with --target, the venv's libraries beside it), then
    from a folder outside the checkout: the configs are found inside the package."""
    wheel_dir, target, elsewhere = tmp_path / "wheel", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(ROOT)], capture_output=True, text=True
    )
    assert built.returncode == 0, built.stderr
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr  # 30 warnings an install once
    wheel = next(wheel_dir.glob("ragtune-*.whl"))
    import tomllib
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "runner/conf/config.yaml" in names and "runner/conf/chunker/sentence.yaml" in names
    assert "runner/conf/qa_generator/llm/openai.yaml" in names and "runner/conf/hydra/launcher/slurm.yaml" in names
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    folders = {"runner.conf." + ".".join(d.relative_to(ROOT / "conf").parts) for d in (ROOT / "conf").rglob("*") if d.is_dir()}
    assert folders <= listed, sorted(folders - listed)  # a new config group goes into pyproject.toml's packages
    assert (
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)], capture_output=True
        ).returncode
        == 0
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    code = "import runner.__main__ as m; print(m.CONF_DIR)"
    where = subprocess.run([sys.executable, "-c", code], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert where.stdout.strip() == str((target / "runner" / "conf").resolve()), where.stderr
    job = subprocess.run([sys.executable, "-m", "runner", "--cfg", "job"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert job.returncode == 0 and "_target_: runner.stages.load.corpus.load_python_docs" in job.stdout, job.stderr


def test_epochs_is_a_positive_number_or_auto(tmp_path):
    for bad in ("many", "0"):
        problems = config_problems(compose([f"finetune.epochs={bad}"], tmp_path))
        assert problems == [f"finetune.epochs={bad} must be a positive number or auto (or set finetune.max_steps)"]
    assert config_problems(compose(["finetune.epochs=auto"], tmp_path)) == []
    assert config_problems(compose(["finetune.epochs=1.5"], tmp_path)) == []


def test_a_sweep_option_without_its_plugin_names_the_extra(monkeypatch):
    from runner import __main__ as entry

    assert entry.missing_plugin(["hparams_search=optuna", "hydra/launcher=joblib"]) is None  # make install has them
    monkeypatch.setitem(entry.SWEEPS_PLUGINS, "hparams_search=optuna", "hydra_plugins.not_installed_sweeper")
    assert entry.missing_plugin(["finetune.epochs=1", "hparams_search=optuna"]) == (
        "hparams_search=optuna needs a Hydra plugin (not_installed_sweeper) that is not installed; install it with "
        "pip install 'ragtune[sweeps]' (make install has it), or leave the option out to run one job here."
    )


def test_jax_is_told_not_to_take_the_gpu_unless_the_user_says_otherwise():
    """A GPU image with JAX beside torch: JAX's default takes 75% of the GPU at first use (a second job on the
    same GPU then ran out of memory on an H200); importing ragtune sets the on-demand default, and only that."""
    code = "import os, runner; print(os.environ['XLA_PYTHON_CLIENT_PREALLOCATE'])"
    env = {k: v for k, v in os.environ.items() if k != "XLA_PYTHON_CLIENT_PREALLOCATE"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True).stdout.strip() == "false"
    mine = subprocess.run(
        [sys.executable, "-c", code], env={**env, "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}, capture_output=True, text=True
    )
    assert mine.stdout.strip() == "true"


def test_a_missing_or_bad_value_is_reported_before_any_work_or_heavy_import(tmp_path):
    """corpus=directory without corpus.path ended in 60 lines of MissingMandatoryValue after the model loaded;
    precision=fp8 and friends waited for torch and llama-index to import (about 9 s) before they were reported."""
    text = assert_clean_failure(
        run_cli("corpus=directory", "logger=none", f"hydra.run.dir={tmp_path}/a"),
        "corpus.path is required by corpus=directory and has no value: give it on the command line (corpus.path=...)",
    )
    assert "MissingMandatoryValue" not in text and not (tmp_path / "a" / "results.json").exists()
    probe = (
        "import sys\nimport runner.__main__ as m\nsys.argv = ['runner', *sys.argv[1:]]\n"
        "try:\n    m.cli()\nexcept SystemExit as e:\n"
        "    print('exit', e.code, 'torch' in sys.modules, 'llama_index.core' in sys.modules)\n"
    )
    for arg, said in (
        ("precision=fp8", "precision=fp8 is not one of auto, fp32, fp16, bf16"),
        ("device=gpu", "device=gpu is not one of auto, cpu, cuda, cuda:N, mps"),
        ("finetune.epochs=two", "finetune.epochs=two must be a positive number or auto"),
    ):
        r = subprocess.run(
            [sys.executable, "-c", probe, arg, "logger=none", f"hydra.run.dir={tmp_path}/b"],
            cwd=ROOT, capture_output=True, text=True,
        )  # fmt: skip
        assert said in r.stdout + r.stderr and "exit 2 False False" in r.stdout, (arg, r.stdout, r.stderr)


def test_an_override_hydra_cannot_apply_names_the_real_key_or_the_option_that_has_it():
    text = assert_clean_failure(run_cli("finetune.lr=1e-4", "--cfg", "job"), "did you mean finetune.learning_rate=1e-4?")
    assert "To append to your config use" not in text and "finetune=sentence_transformers" in text
    text = assert_clean_failure(run_cli("corpus.path=docs/", "--cfg", "job"), "add corpus=directory corpus.path=docs/")
    assert "corpus=python_docs" in text and "To append" not in text
    assert run_cli("corpus=directory", "corpus.path=docs/", "--cfg", "job").returncode == 0  # the option that has it
