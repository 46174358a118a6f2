"""A stale hit is the worst bug: every input, module, library and config value that decides a
stage's output is in its key. One test per way a key could miss a change."""

from __future__ import annotations

import copy
import json
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf, open_dict

from conftest import compose, fast
from llm_server import LlmServer
from runner.infra import code_deps
from runner.infra.code_deps import PACKAGE_DIR
from runner.data.eval_set import EvalSet
from runner.base_eval import base_keys
from runner.data_stages import data_keys
from runner.pipeline import run
from runner.infra.secrets import is_secret_key
from runner.infra.stage_cache import StageCache

NEW_WORDS = "The zorblax quibbleflux verenthal protocol synchronizes glimmerwick transducers."


def keys(cfg, code_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    return data_keys(cfg, StageCache(cfg.cache.dir, code_dir=code_dir))


def markdown_docs(folder: Path, n: int = 6) -> Path:
    """A folder of markdown files: the first topics of the Python reference, one per file."""
    from pydoc_data.topics import topics

    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(topics)[:n]:
        (folder / f"{name}.md").write_text(f"# {name}\n\n{topics[name]}")
    return folder


# ---- input files by content -----------------------------------------------------------------------


def test_the_reported_case_edited_documents_reach_the_pairs_and_the_eval_set(tiny_model, tmp_path):
    """The issue's reproduction: append a paragraph of new words to every file, run the same command."""
    docs = markdown_docs(tmp_path / "docs", 8)
    args = fast(tiny_model, "logger=none", "corpus=directory", f"corpus.path={docs}")
    root = tmp_path / "outputs"
    run(compose(args, tmp_path / "run1", root))
    for f in docs.iterdir():
        f.write_text(f.read_text() + f"\n\n{NEW_WORDS} Every zorblax node of {f.stem} emits quibbleflux pulses.\n")
    run(compose(args, tmp_path / "run2", root))
    results = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert {results["cache"][s] for s in ("load", "generate", "eval_set", "evaluate_base")} == {"miss"}
    assert "zorblax" in (tmp_path / "run2" / "train_pairs.json").read_text()
    assert "zorblax" in (tmp_path / "run2" / "eval_set.json").read_text()
    run(compose(args, tmp_path / "run3", root))  # unchanged files: the shared stages hit again
    again = json.loads((tmp_path / "run3" / "results.json").read_text())["cache"]
    assert again == dict.fromkeys(
        ("generate", "dev_set", "eval_set", "choices_before_training", "evaluate_base", "base_embeddings"), "hit"
    )


@pytest.mark.parametrize("change", ["edit", "add", "remove", "rename", "edit_in_subfolder"])
def test_any_change_to_a_corpus_folder_changes_every_downstream_key(tmp_path, change):
    docs = markdown_docs(tmp_path / "docs")
    (docs / "sub").mkdir()
    (docs / "sub" / "deep.md").write_text("# Deep\n\nA nested document. It has two sentences.")
    cfg = compose(["corpus=directory", f"corpus.path={docs}"], tmp_path / "run")
    before = keys(cfg)
    first = sorted(docs.glob("*.md"))[0]
    if change == "edit":  # same size, same modification time: only the content differs
        import os

        stat = first.stat()
        text = first.read_text()
        first.write_text(text[:-1] + ("x" if text[-1] != "x" else "y"))
        os.utime(first, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        assert first.stat().st_size == stat.st_size and first.stat().st_mtime_ns == stat.st_mtime_ns
    elif change == "add":
        (docs / "new.md").write_text(f"# New\n\n{NEW_WORDS}")
    elif change == "remove":
        first.unlink()
    elif change == "rename":  # same content, another document id
        first.rename(docs / "renamed.md")
    else:
        (docs / "sub" / "deep.md").write_text("# Deep\n\nA nested document. It has three sentences now. Yes.")
    after = keys(cfg)
    assert all(after[s] != before[s] for s in before), (change, before, after)


def test_a_touched_file_with_the_same_content_keeps_its_key(tmp_path):
    docs = markdown_docs(tmp_path / "docs")
    cfg = compose(["corpus=directory", f"corpus.path={docs}"], tmp_path / "run")
    before = keys(cfg)
    for f in docs.iterdir():
        f.write_text(f.read_text())  # rewritten: new modification time, same bytes
    assert keys(cfg) == before


def test_files_named_by_corpus_pairs_and_eval_configs_are_keyed_by_content(tmp_path):
    pairs = tmp_path / "pairs.json"
    data = {
        "queries": {"q1": "what is a loop"},
        "corpus": {"d1": "A loop repeats. It ends.", "d2": "Other."},
        "relevant_docs": {"q1": ["d1"]},
    }
    pairs.write_text(json.dumps(data))
    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "t", "text": "A loop repeats."}) + "\n")
    for option in (["corpus=qa_file", f"corpus.path={pairs}"], ["corpus=beir", f"corpus.path={beir}"]):
        cfg = compose(option, tmp_path / "run")
        before = keys(cfg)["load"]
        target = pairs if "qa_file" in option[0] else beir / "corpus.jsonl"
        target.write_text(target.read_text().replace("repeats", "iterates"))  # edited in place
        assert keys(cfg)["load"] != before, option


def test_pairs_and_eval_files_edited_in_place_are_read_again(tiny_model, tmp_path):
    """qa_generator=file and eval_set=file: the run trains and scores on the files as they are now."""
    src = tmp_path / "src"
    run(compose(fast(tiny_model, "logger=none", "finetune=none"), src))  # an eval set to cut files from
    ds = json.loads((src / "eval_set.json").read_text())
    qids = sorted(ds["queries"])
    half = len(qids) // 2
    for name, part in (("train.json", qids[:half]), ("val.json", qids[half:])):
        used = {d for q in part for d in ds["relevant_docs"][q]}
        (tmp_path / name).write_text(
            json.dumps(
                {
                    "queries": {q: ds["queries"][q] for q in part},
                    "relevant_docs": {q: ds["relevant_docs"][q] for q in part},
                    "corpus": {d: t for d, t in ds["corpus"].items() if d in used or name == "val.json"},
                }
            )
        )
    args = fast(
        tiny_model,
        "logger=none",
        "qa_generator=file",
        f"qa_generator.path={tmp_path / 'train.json'}",
        "eval_set=file",
        f"eval_set.path={tmp_path / 'val.json'}",
        "finetune.batch_size=4",
    )
    root = tmp_path / "outputs"
    run(compose(args, tmp_path / "run1", root))
    for name in ("train.json", "val.json"):
        f = tmp_path / name
        d = json.loads(f.read_text())
        d["queries"] = {q: f"{t} {NEW_WORDS}" for q, t in d["queries"].items()}
        f.write_text(json.dumps(d))
    run(compose(args, tmp_path / "run2", root))
    assert NEW_WORDS in (tmp_path / "run2" / "train_pairs.json").read_text()
    assert NEW_WORDS in (tmp_path / "run2" / "eval_set.json").read_text()
    assert json.loads((tmp_path / "run2" / "results.json").read_text())["cache"]["evaluate_base"] == "miss"


def test_what_decides_nothing_misses_nothing_the_dev_split_and_the_bootstrap(tmp_path):
    """The held-out documents are carved before the dev split, so dev.* changes the split and the dev questions
    but not the eval set; evaluate.bootstrap sets the intervals computed later, not the base evaluation."""
    cfg = compose([], tmp_path / "run")
    before = keys(cfg)
    for path, value in (("dev.fraction", 0.3), ("dev.seed", 7)):
        changed = copy.deepcopy(cfg)
        with open_dict(changed):
            OmegaConf.update(changed, path, value)
        after = keys(changed)
        assert after["split"] != before["split"] and after["dev_set"] != before["dev_set"], path
        assert after["eval_set"] == before["eval_set"] and after["chunk"] == before["chunk"], path
    changed = copy.deepcopy(cfg)
    with open_dict(changed):
        changed.split.val_fraction = 0.3  # the held-out part itself: another eval set
    assert keys(changed)["eval_set"] != before["eval_set"]
    model = SimpleNamespace(max_seq_length=128)
    es = EvalSet({"q": "loop"}, {"d": "a loop"}, {"q": ["d"]})
    stages = StageCache(tmp_path / "cache")
    base = base_keys(cfg, model, es, "cpu", "fp32", stages)["evaluate_base"]
    with open_dict(cfg):
        cfg.evaluate.bootstrap = 2000
    assert base_keys(cfg, model, es, "cpu", "fp32", stages)["evaluate_base"] == base
    with open_dict(cfg):
        cfg.evaluate.ndcg_at_k = [5, 10]  # a cut-off is computed by this stage: another key
    assert base_keys(cfg, model, es, "cpu", "fp32", stages)["evaluate_base"] != base


def test_the_base_evaluation_follows_the_model_files_and_a_hub_models_commit(tiny_model, tmp_path, monkeypatch):
    from huggingface_hub import constants

    model = SimpleNamespace(max_seq_length=128)
    es = EvalSet({"q": "loop"}, {"d": "a loop"}, {"q": ["d"]})
    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    cfg = compose([f"base_model.name_or_path={copy}"], tmp_path / "run")
    stages = StageCache(tmp_path / "cache")
    before = base_keys(cfg, model, es, "cpu", "fp32", stages)
    (copy / "tokenizer_config.json").write_text((copy / "tokenizer_config.json").read_text() + "\n")
    after = base_keys(cfg, model, es, "cpu", "fp32", stages)
    assert after["base_embeddings"] != before["base_embeddings"] and after["evaluate_base"] != before["evaluate_base"]
    assert base_keys(cfg, model, es, "cpu", "bf16", stages)["evaluate_base"] != after["evaluate_base"]
    # the same bf16 run on a CPU with other bf16 kernels (AVX-512 BF16 against AMX) computes other digits
    import runner.base_eval

    monkeypatch.setattr(runner.base_eval, "hardware", lambda device: "cpu x86_64 avx2,avx512f,avx512_bf16")
    other = base_keys(cfg, model, es, "cpu", "bf16", stages)
    monkeypatch.undo()
    assert other["base_embeddings"] != base_keys(cfg, model, es, "cpu", "bf16", stages)["base_embeddings"]

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    repo = tmp_path / "hub" / "models--org--model"
    hub_cfg = compose(["base_model.name_or_path=org/model"], tmp_path / "run")
    seen = set()
    for commit in ("c1", "c2"):  # `main` moved on the hub and the cache followed it
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "config.json").write_text(commit)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)
        seen.add(base_keys(hub_cfg, model, es, "cpu", "fp32", stages)["evaluate_base"])
    assert len(seen) == 2


# ---- code: derived from the imports, every module covered ------------------------------------------


def _traced_runs(monkeypatch, tiny_model, tmp_path, configs: list[list[str]]) -> dict[str, tuple[set, set]]:
    """Run the pipeline on each config with a profiler on while each stage computes; return, per
    stage, (runner files that ran, runner files in its key)."""
    import threading

    ran: dict[str, set] = {}
    keyed: dict[str, set] = {}

    def traced(self, stage, compute, values):
        files = ran.setdefault(stage, set())

        def profile(frame, event, arg):
            path = frame.f_code.co_filename
            caller = frame.f_back.f_code.co_filename if frame.f_back else ""
            # code the logging machinery calls (the secret-masking filter, and what it calls) cannot change an
            # output; a stage's own call into infra/secrets.py is still recorded (its caller is the stage)
            masking = "/logging/" in caller or caller.endswith("runner/infra/secrets.py")
            if event == "call" and path.startswith(str(PACKAGE_DIR)) and not masking:
                files.add(Path(path).relative_to(PACKAGE_DIR).as_posix())

        sys.setprofile(profile)
        threading.setprofile(profile)
        try:
            return compute(*values)
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
            keyed.setdefault(stage, set()).update(self.code_modules[stage])

    monkeypatch.setattr(StageCache, "_compute", traced)
    for i, overrides in enumerate(configs):
        run(compose(fast(tiny_model, "logger=none", *overrides), tmp_path / f"run{i}", tmp_path / f"outputs{i}"))
    return {stage: (ran[stage], keyed[stage]) for stage in ran}


def test_every_runner_module_a_stage_runs_is_in_that_stages_key(tiny_model, tmp_path, monkeypatch):
    """Ground truth from execution, not from the derivation under test: a profiler records which
    runner files run while each stage computes (and encodes its entry); each must be in its key."""
    docs = markdown_docs(tmp_path / "docs")
    with LlmServer() as server:
        traced = _traced_runs(
            monkeypatch,
            tiny_model,
            tmp_path,
            [
                [
                    "base_model.max_seq_length=auto",
                    "chunker.chunk_size=400",
                    "chunker.fit_window=false",
                ],  # long chunks: the window is chosen
                ["corpus=directory", f"corpus.path={docs}", "chunker=markdown", "qa_generator=keywords", "eval_set=held_out_ict"],
                [
                    "qa_generator=llm",
                    f"qa_generator.llm.api_base={server.url}",
                    "qa_generator.llm.model=m",
                    "qa_generator.backoff_s=0.01",
                    "finetune.batch_size=4",
                    "evaluate.engine=llama_index",
                ],
            ],
        )
    assert set(traced) >= {
        "load",
        "chunk",
        "split",
        "generate",
        "eval_set",
        "base_embeddings",
        "evaluate_base",
        "choices_before_training",
    }
    for stage, (ran, keyed) in traced.items():
        assert ran, stage
        assert ran <= keyed, f"{stage} ran {sorted(ran - keyed)} but its key does not cover them"
    assert "stages/generate/llm.py" in traced["generate"][0] and "stages/chunk/chunkers.py" in traced["chunk"][0]


def test_editing_any_module_changes_exactly_the_keys_of_the_stages_that_import_it(tmp_path):
    """Walk every module of the package (so tomorrow's module is walked too): an edit to its code
    changes the key of each stage whose import closure holds it, and of no other stage."""
    cfg = compose(["corpus=directory", f"corpus.path={markdown_docs(tmp_path / 'docs')}"], tmp_path / "run")
    copy = tmp_path / "runner"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    stages = StageCache(cfg.cache.dir, code_dir=copy)
    before = data_keys(cfg, stages)
    closures = dict(stages.code_modules)
    modules = sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*.py"))
    assert len(modules) > 20
    for module in modules:
        path = copy / module
        original = path.read_text()
        path.write_text(original + "\n_edited_by_the_test = 1\n")
        after = keys(cfg, copy)
        path.write_text(original)
        for stage in before:
            changed = after[stage] != before[stage]
            upstream_changed = any(module in closures[s] for s in _upstream(stage))
            assert changed == (module in closures[stage] or upstream_changed), (module, stage)
    assert keys(cfg, copy) == before
    assert "stages/finetune/trainer.py" not in closures["load"]  # derived, not "everything": training code is not a loader
    path = copy / "stages" / "chunk" / "chunking.py"  # a comment or a blank line is not code
    path.write_text("# a comment\n\n" + path.read_text())
    assert keys(cfg, copy) == before


def _upstream(stage: str) -> list[str]:
    order = {"load": [], "chunk": ["load"], "split": ["load", "chunk"]}
    return order.get(stage, ["load", "chunk", "split"])


def test_a_module_added_tomorrow_is_in_the_key_of_the_stage_that_imports_it(tmp_path):
    cfg = compose([], tmp_path / "run")
    copy = tmp_path / "runner"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    before = keys(cfg, copy)
    (copy / "tomorrow.py").write_text("def helper(text):\n    return text.strip()\n")
    assert keys(cfg, copy) == before  # nobody imports it yet
    chunk = copy / "stages" / "chunk" / "chunking.py"
    chunk.write_text(
        chunk.read_text().replace(
            "    fill_tiktoken_cache()\n", "    fill_tiktoken_cache()\n    from runner.tomorrow import helper  # noqa: F401\n"
        )
    )
    with_import = keys(cfg, copy)
    assert with_import["chunk"] != before["chunk"] and with_import["load"] == before["load"]
    (copy / "tomorrow.py").write_text("def helper(text):\n    return text.lower()\n")
    assert keys(cfg, copy)["chunk"] != with_import["chunk"]


# ---- library and Python versions -------------------------------------------------------------------


def test_a_library_or_python_upgrade_changes_the_keys_of_the_stages_that_use_it(tmp_path, monkeypatch):
    cfg = compose([], tmp_path / "run")
    model = SimpleNamespace(max_seq_length=128)
    es = EvalSet({"q": "loop"}, {"d": "a loop"}, {"q": ["d"]})

    def all_keys():
        stages = StageCache(cfg.cache.dir)
        return {**data_keys(cfg, stages), **base_keys(cfg, model, es, "cpu", "fp32", stages)}

    before = all_keys()
    dists, tops = code_deps._installed()

    def upgraded(name: str):
        new = dict(dists)
        new[name] = code_deps._Dist(dists[name].version + ".post1", dists[name].requires)
        monkeypatch.setattr(code_deps, "_installed", lambda: (new, tops))
        code_deps._library_versions.cache_clear()
        try:
            return all_keys()
        finally:
            monkeypatch.setattr(code_deps, "_installed", lambda: (dists, tops))
            code_deps._library_versions.cache_clear()

    tiktoken = upgraded("tiktoken")  # not imported by ragtune: llama-index's splitters count with it
    assert tiktoken["chunk"] != before["chunk"]
    st = upgraded("sentence-transformers")  # the model's encode is its code
    assert st["evaluate_base"] != before["evaluate_base"] and st["base_embeddings"] != before["base_embeddings"]
    pdf = upgraded("pypdf")  # a reader of the directory loader: loading and what follows, not the encoder
    assert all(pdf[s] != before[s] for s in ("load", "chunk", "split", "generate", "eval_set"))
    assert pdf["base_embeddings"] == before["base_embeddings"] and pdf["evaluate_base"] == before["evaluate_base"]
    monkeypatch.setattr(code_deps.sys, "version", sys.version + " (another build)")
    code_deps._library_versions.cache_clear()
    python = all_keys()
    code_deps._library_versions.cache_clear()
    assert all(python[s] != before[s] for s in before if s != "model_id")


# ---- config: every leaf, secrets hashed, nothing folded out -----------------------------------------


def _leaves(tree, prefix=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], tree


def _other(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.1
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, list):
        return value[:-1] if value else ["x"]
    return 1  # None: any value


GROUP_OF_STAGE = {"load": "corpus", "chunk": "chunker", "split": "split", "split ": "dev", "generate": "qa_generator"}
OPTIONS = [
    [],
    ["corpus=directory", "corpus.path=DOCS"],
    ["chunker=token"],
    ["chunker=markdown"],
    ["chunker=semantic"],
    ["qa_generator=keywords"],
    ["qa_generator=titles"],
    ["qa_generator=ict_titles"],
    ["qa_generator=llm", "qa_generator.llm.model=m"],
    ["qa_generator=llm", "qa_generator/llm=openai"],
    ["qa_generator=llm", "qa_generator/llm=ollama", "qa_generator.llm.model=m"],
    ["qa_generator=llm", "qa_generator/llm=huggingface", "qa_generator.llm.model_name=m"],
    ["eval_set=held_out_ict", "qa_generator=keywords"],
]


def _set_other(cfg, path: str, value) -> None:
    """Set the leaf at `path` to another value its schema accepts."""
    from omegaconf.errors import ValidationError

    for candidate in [_other(value)] if value is not None else [1, "x", ["x"], True]:
        try:
            with open_dict(cfg):
                OmegaConf.update(cfg, path, candidate, merge=False)
            return
        except ValidationError:
            continue
    raise AssertionError(f"no other value fits {path}")


@pytest.mark.parametrize("overrides", OPTIONS, ids=lambda o: " ".join(o) or "default")
def test_every_leaf_of_each_stage_slice_changes_its_key(tmp_path, overrides):
    docs = markdown_docs(tmp_path / "docs")
    overrides = [o.replace("DOCS", str(docs)) for o in overrides]
    cfg = compose(overrides, tmp_path / "run")
    before = keys(cfg)
    groups = dict(GROUP_OF_STAGE)
    if cfg.eval_set.get("generator") is not None:
        groups["eval_set"] = "eval_set.generator"
    checked = 0
    for stage, group in groups.items():
        for path, value in _leaves(OmegaConf.to_container(OmegaConf.select(cfg, group), resolve=True)):
            if path == "_target_":
                continue  # another class entirely: covered by its own option above
            changed = copy.deepcopy(cfg)
            _set_other(changed, f"{group}.{path}", value)
            if is_secret_key(path.split(".")[-1]):  # a credential decides who pays, not what is made
                assert keys(changed)[stage.strip()] == before[stage.strip()], (stage, path, value)
                continue
            assert keys(changed)[stage.strip()] != before[stage.strip()], (stage, path, value)
            checked += 1
    assert checked >= 5


def test_max_tokens_is_shown_and_keyed_and_a_rotated_api_key_keeps_the_key_and_is_never_written(tmp_path, monkeypatch):
    from runner.infra.secrets import is_secret_key, redact

    for name in (
        "api_key",
        "apiKey",
        "hf_token",
        "token",
        "access_token",
        "Authorization",
        "client_secret",
        "password",
        "x-api-key",
        "aws_secret_access_key",
    ):
        assert is_secret_key(name), name
    for name in ("max_tokens", "max_new_tokens", "tokenizer_name", "num_output_tokens", "key_words", "secret_name"):
        assert not is_secret_key(name), name
    cfg = compose(["qa_generator=llm", "qa_generator.llm.model=m"], tmp_path / "run")
    stages = StageCache(tmp_path / "cache")
    base = data_keys(cfg, stages)["generate"]
    described = stages.described[base]["config"]
    assert described["llm"]["max_tokens"] == 256 and described["llm"]["api_key"] == "***redacted***"
    with open_dict(cfg):
        cfg.qa_generator.llm.max_tokens = 512
    assert data_keys(cfg, StageCache(tmp_path / "cache"))["generate"] != base
    keys = []
    for value in ("sk-first-0123456789", "sk-second-0123456789"):  # a key rotated: who pays, not what is asked
        with open_dict(cfg):
            cfg.qa_generator.llm.api_key = value
        stages = StageCache(tmp_path / "cache")
        keys.append(data_keys(cfg, stages)["generate"])
        assert value not in json.dumps(stages.described[keys[-1]]) and value[3:] not in keys[-1]
    assert keys[0] == keys[1]
    assert redact({"llm": {"max_tokens": 3, "api_key": "sk-x", "default_headers": {"Authorization": "Bearer y"}}}) == {
        "llm": {"max_tokens": 3, "api_key": "***redacted***", "default_headers": {"Authorization": "***redacted***"}}
    }


def test_llm_answers_are_kept_raw_and_keyed_by_every_setting(tmp_path):
    from llama_index.llms.openai_like import OpenAILike

    from runner.stages.generate.llm import llm_pairs
    from test_llm_generator import nodes

    with LlmServer() as server:

        def ask(max_tokens: int, key: str = "sk-first-0123456789"):
            llm = OpenAILike(
                model="m", api_base=server.url, api_key=key, is_chat_model=True, max_tokens=max_tokens, max_retries=0, timeout=10
            )
            return llm_pairs(nodes("a", "b"), llm=llm, cache_dir=str(tmp_path), backoff_s=0.01)

        first = ask(256)
        asked = len(server.requests)
        assert ask(256).model_dump() == first.model_dump() and len(server.requests) == asked  # reused
        assert ask(256, key="sk-rotated-9876543210").model_dump() == first.model_dump()  # a rotated key: the same answers
        assert len(server.requests) == asked
        ask(64)  # another max_tokens: another answer, asked again
        assert len(server.requests) == asked + 2
    stored = [json.loads(p.read_text()) for p in tmp_path.rglob("*.json") if p.name != "manifest.json"]
    assert stored and all(set(s) == {"answer"} for s in stored)  # raw: cleaning runs on every read
    manifests = [json.loads(p.read_text()) for p in tmp_path.rglob("manifest.json")]
    assert sorted(m["config"]["max_tokens"] for m in manifests) == [64, 256]
    assert all(m["config"]["api_key"] == "***redacted***" for m in manifests)


# ---- seeing and managing the cache --------------------------------------------------------------------


def test_the_cache_command_lists_shows_prunes_and_clears(tmp_path):
    import os
    import subprocess
    import time

    from runner.infra.stage_cache import write_entry

    root = tmp_path / "cache"
    made = {
        "config": {"_target_": "runner.stages.load.corpus.load_directory", "path": "/data/docs"},
        "files": {"/data/docs": {"sha256": "ab" * 32, "files": 3}},
    }
    write_entry(root / "load" / "k-old", "load", "k-old", {"rows": [1] * 1000}, made)
    write_entry(root / "load" / "k-new", "load", "k-new", {"rows": [2]}, made)
    write_entry(root / "chunk" / "k-chunk", "chunk", "k-chunk", {"nodes": []}, {"config": {"chunk_size": 96}})
    (root / "chunk" / ".k-chunk.tmp123").mkdir()  # a killed writer's leftover
    week = time.time() - 8 * 86400
    os.utime(root / "load" / "k-old" / "manifest.json", (week, week))
    os.utime(root / "chunk" / ".k-chunk.tmp123", (week, week))
    ragtune = Path(sys.executable).parent / "ragtune"

    def cache(*args, via=(sys.executable, "-m", "runner.cache")):
        r = subprocess.run(
            [*via, "--dir", str(root), *args], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
        )
        return r.returncode, r.stdout + r.stderr

    rc, out = cache("list")
    assert rc == 0 and "4 entries" in out and "chunk_size=96" in out and "path=/data/docs" in out, out
    assert "[docs: 3 file(s) abababab]" in out and "incomplete" in out and "1w ago" in out
    import io

    from rich.console import Console

    from runner.cache import entries, entries_table

    for width in (100, 160, 250):  # key, size and ages keep their width; "made by" gives way (it once took it all)
        buf = io.StringIO()
        Console(width=width, file=buf, color_system=None).print(entries_table(root, entries(root), time.time()))
        text = buf.getvalue()
        assert "k-old" in text and "k-chunk" in text and "1w ago" in text and "load" in text, (width, text)
    rc, out = cache("list", "--json", via=(str(ragtune), "cache"))  # the console script routes `cache` here
    rows = json.loads(out)
    assert rc == 0 and {(r["stage"], r["key"], r["complete"]) for r in rows} == {
        ("load", "k-old", True),
        ("load", "k-new", True),
        ("chunk", "k-chunk", True),
        ("chunk", ".k-chunk.tmp123", False),
    }
    rc, out = cache("show", "k-new")
    assert rc == 0 and json.loads(out)["config"]["path"] == "/data/docs"
    rc, out = cache("prune", "--older-than", "7d")
    assert rc == 0 and "2 entries" in out and not (root / "load" / "k-old").exists()
    assert not (root / "chunk" / ".k-chunk.tmp123").exists() and (root / "load" / "k-new").is_dir()
    rc, out = cache("clear", "--stage", "load")  # no terminal, no --yes: refuses and says how
    assert rc != 0 and "--yes" in out and (root / "load" / "k-new").is_dir()
    rc, out = cache("clear", "--stage", "load", "--yes")
    assert rc == 0 and not (root / "load" / "k-new").exists() and (root / "chunk" / "k-chunk").is_dir()
    rc, out = cache("prune", "--older-than", "soon")
    assert rc != 0 and "--older-than=soon" in out


def test_make_clean_keeps_results_models_and_the_cache():
    import subprocess

    from conftest import ROOT

    commands = {
        target: subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True, text=True).stdout
        for target in ("clean", "clean-cache", "clean-outputs")
    }
    assert ".venv" in commands["clean"] and "outputs" not in commands["clean"]
    assert "runner.cache clear" in commands["clean-cache"] and "rm -rf outputs" not in commands["clean-cache"]
    assert "rm -rf outputs" in commands["clean-outputs"]


def test_the_chunk_key_follows_the_window_and_the_tokenizer_it_fits_chunks_to(tiny_model, tmp_path):
    """fit_window (and chunk_size=auto) size chunks by the base model's window in its word pieces: the
    window and the model's tokenizer decide the chunks, so both reach the chunk stage's key."""
    chunk = lambda *o: keys(compose(fast(tiny_model, "logger=none", *o), tmp_path / "run"))["chunk"]  # noqa: E731
    base = chunk("base_model.max_seq_length=64")
    assert chunk("base_model.max_seq_length=48") != base  # another window
    assert chunk("base_model.max_seq_length=64", "base_model.passage_prompt=passage: ") != base  # less room
    assert chunk("base_model.max_seq_length=64", "chunker.chunk_size=auto") != base
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model, other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "do_lower_case": False}))  # another tokenizer
    assert chunk("base_model.max_seq_length=64", f"base_model.name_or_path={other}") != base
    # without fit_window a number of tiktoken tokens does not depend on the model
    loose = chunk("base_model.max_seq_length=64", "chunker.fit_window=false")
    assert chunk("base_model.max_seq_length=48", "chunker.fit_window=false") == loose


def test_the_same_questions_in_another_order_are_another_eval_set_to_the_cache(tiny_model, tmp_path):
    """Per-query arrays pair rows by position (intervals, p-values, the verdict, per_query.csv): a reordered
    eval file must not read the first order's cached base evaluation."""
    import csv

    src = tmp_path / "src"
    run(compose(fast(tiny_model, "logger=none", "finetune=none"), src))
    data = json.loads((src / "eval_set.json").read_text())
    reordered = {**data, "queries": dict(reversed(list(data["queries"].items())))}
    root = tmp_path / "outputs"
    ranks = {}
    for name, content in (("forward", data), ("reversed", reordered)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(content))
        out = tmp_path / name
        run(compose(fast(tiny_model, "logger=none", "finetune=none", "eval_set=file", f"eval_set.path={path}"), out, root))
        results = json.loads((out / "results.json").read_text())
        assert results["cache"]["evaluate_base"] == "miss", name  # the reversed order too: not the forward one's entry
        with (out / "per_query.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [r["query_id"] for r in rows] == [q for q in content["queries"] if content["relevant_docs"].get(q)]
        ranks[name] = {r["query_id"]: (r["base_rank"], r["bm25_rank"]) for r in rows}
    assert ranks["forward"] == ranks["reversed"]  # each question keeps its own ranks


def test_prune_and_clear_keep_what_is_in_use_exports_and_llm_answers_too(tmp_path, monkeypatch):
    """An export is an entry like any other (manifest, atomic, aged by its last use); LLM answers are aged by
    their last use, not their creation; a writer's fresh temp folder is left to the job writing it."""
    import os
    import time

    from runner import cache as cache_cli
    from runner.infra.stage_cache import StageCache

    root = tmp_path / "cache"
    stages = StageCache(root)
    key = stages.key("export_onnx", {"model": "abc"})

    def build(out):  # a stand-in export: a folder of files
        out.mkdir()
        (out / "model.onnx").write_bytes(b"graph")

    assert stages.run_files("export_onnx", key, build, tmp_path / "run" / "exports" / "onnx") == "miss"
    entry = root / "export_onnx" / key
    month = time.time() - 30 * 86400
    os.utime(entry / "manifest.json", (month, month))  # made a month ago ...
    again = StageCache(root)
    assert again.run_files("export_onnx", key, build, tmp_path / "run2" / "exports" / "onnx") == "hit"  # ... used now
    assert (tmp_path / "run2" / "exports" / "onnx" / "model.onnx").read_bytes() == b"graph"
    answers = root / "llm_questions" / "k-answers"
    answers.mkdir(parents=True)
    (answers / "manifest.json").write_text(json.dumps({"stage": "llm_questions", "key": "k-answers", "created": month}))
    os.utime(answers / "manifest.json", (month, month))
    from runner.stages.generate import llm

    monkeypatch.setattr(llm, "llm_settings", lambda _: {"model": "m"})
    store = llm.answer_store(str(root / "llm_questions"), object())
    os.utime(store / "manifest.json", (month, month))  # its answers were paid for a month ago ...
    llm.answer_store(str(root / "llm_questions"), object())  # a later run asks the same LLM: in use again
    writing = root / "load" / ".k-load.abc123"
    writing.mkdir(parents=True)  # a job is writing this entry right now
    cache_cli.main(["--dir", str(root), "prune", "--older-than", "7d"])
    assert entry.is_dir() and store.is_dir() and writing.is_dir()
    assert not answers.exists()  # nobody used that one for a month
    cache_cli.main(["--dir", str(root), "clear", "--yes"])
    assert writing.is_dir() and not entry.exists() and not store.exists()
