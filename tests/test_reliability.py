"""Bad input, faults and secrets: a clear error, nothing lost, no key anywhere it should not be."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, compose, fast, run_cli
from llm_server import LlmServer
from runner.infra.errors import RagtuneError
from runner.pipeline import run
from runner.infra.stage_cache import StageCache, read_entry


def clean_failure(r: subprocess.CompletedProcess, *needles: str) -> str:
    text = r.stdout + r.stderr
    assert r.returncode == 2, text
    assert "Traceback" not in text, text
    for needle in needles:
        assert needle in text, text
    return text


# ---- corpus and config -------------------------------------------------------------------------


def test_a_corpus_of_one_document_cannot_be_split(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "only.txt").write_text("One document about retrieval. It has two sentences only. " * 20)
    r = run_cli(
        "debug=fast",
        "logger=none",
        "corpus=directory",
        f"corpus.path={docs}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.root={tmp_path / 'outputs'}",
    )
    clean_failure(r, "gave 1 document(s) to train on, but a held-out split needs at least 2")


def test_device_and_precision_requests_the_hardware_cannot_honour_are_clear_errors():
    import torch

    from runner.infra.models import resolve_device, resolve_precision

    from runner.infra.models import cpu_has_native_bf16

    assert resolve_device("cpu") == "cpu"
    assert resolve_precision("auto", "cpu") == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else resolve_device("auto"))
    if not torch.cuda.is_available():
        assert resolve_device("auto") in ("cpu", "mps")
        for device in ("cuda", "cuda:1"):
            with pytest.raises(RagtuneError, match=f"device={device} was asked for.*device=auto"):
                resolve_device(device)
        with pytest.raises(RagtuneError, match="precision=fp16"):
            resolve_precision("fp16", "cpu")
    assert resolve_precision("fp32", "cpu") == "fp32"


def test_auto_precision_on_a_cpu_is_bf16_only_where_the_cpu_has_bf16_instructions(tmp_path, monkeypatch):
    from runner.infra import models

    for flags, expected in (("fpu avx512f avx512_bf16 amx_tile", "bf16"), ("fpu amx_bf16", "bf16"), ("fpu avx2 avx512f", "fp32")):
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        monkeypatch.setattr(models, "CPUINFO", str(info))
        assert models.resolve_precision("auto", "cpu") == expected, flags
        assert models.resolve_precision("fp32", "cpu") == "fp32"
    monkeypatch.setattr(models, "CPUINFO", str(tmp_path / "absent"))  # not Linux: no guessing
    assert models.resolve_precision("auto", "cpu") == "fp32" and models.resolve_precision("auto", "mps") == "fp32"


def test_the_cpus_int8_instructions_are_named_from_its_flags(tmp_path, monkeypatch):
    from runner.infra import models

    cases = (
        ("fpu avx2 avx512f avx512_vnni amx_int8", "AMX"),
        ("fpu avx2 avx512f avx512_vnni", "AVX-512 VNNI"),
        ("fpu avx2 avx_vnni", "AVX-VNNI"),
        ("fpu avx avx2 fma", "AVX2, no VNNI"),
        ("fp asimd asimddp", "Arm dot product"),  # Arm names its flags Features
        ("fpu sse4_2", "no int8 dot product"),
    )
    for flags, expected in cases:
        info = tmp_path / "cpuinfo"
        key = "Features" if "asimd" in flags else "flags"
        info.write_text(f"processor\t: 0\nmodel name\t: Some CPU 9000\n{key}\t\t: {flags}\n")
        monkeypatch.setattr(models, "CPUINFO", str(info))
        assert models.cpu_int8() == expected, flags
        assert models.cpu_name() == "Some CPU 9000"
    monkeypatch.setattr(models, "CPUINFO", str(tmp_path / "absent"))
    assert models.cpu_int8() == "unknown" and models.cpu_name()


def test_device_cuda_without_a_gpu_fails_before_any_work(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run_cli(
        "debug=fast", "logger=none", "device=cuda", f"hydra.run.dir={tmp_path / 'run'}", f"paths.root={tmp_path / 'outputs'}"
    )
    clean_failure(r, "device=cuda was asked for")
    assert not (tmp_path / "outputs" / "cache").exists()  # failed before loading anything


# ---- eval sets -------------------------------------------------------------------------------


def test_eval_queries_without_a_relevant_document_are_dropped_and_counted(fast_pairs, tiny_model, tmp_path):
    data = json.loads(fast_pairs.read_text())
    first = sorted(data["queries"])[:2]
    for q in first:
        data["relevant_docs"][q] = []
    path = tmp_path / "val.json"
    path.write_text(json.dumps(data))
    out = tmp_path / "run"
    run(compose(fast(tiny_model, "finetune=none", "eval_set=file", f"eval_set.path={path}", "logger=none"), out))
    counts = json.loads((out / "results.json").read_text())["counts"]
    assert counts["eval_queries_dropped"] == 2 and counts["eval_queries"] == len(data["queries"]) - 2


@pytest.fixture(scope="module")
def fast_pairs(tiny_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs_run")
    run(compose(fast(tiny_model, "finetune=none", "logger=none"), out))
    return out / "eval_set.json"


# ---- LLM generator ---------------------------------------------------------------------------


def test_llm_failures_are_counted_and_an_incomplete_generation_is_retried_next_run(tiny_model, tmp_path):
    from runner.stages.generate import llm as generate_llm

    out, root = tmp_path / "run1", tmp_path / "outputs"
    args = (
        "logger=none",
        "qa_generator=llm",
        "qa_generator.backoff_s=0.01",
        "qa_generator.retries=1",
        "qa_generator.max_concurrency=1",  # one chunk at a time: the first three are the bad ones
        "qa_generator.llm.model=m",
        "finetune.batch_size=4",
    )
    with LlmServer() as server:
        calls = {"n": 0}
        real = generate_llm.clean_questions

        def flaky(text, limit):  # the first 3 chunks' answers are unusable, on every try
            calls["n"] += 1
            return [] if calls["n"] <= 6 else real(text, limit)

        generate_llm.clean_questions = flaky
        try:
            run(compose(fast(tiny_model, *args, f"qa_generator.llm.api_base={server.url}"), out, root))
        finally:
            generate_llm.clean_questions = real
        first = json.loads((out / "results.json").read_text())
        assert first["counts"]["generate_failed_chunks"] + first["counts"]["eval_set_failed_chunks"] == 3
        assert "not stored" in " ".join(first["cache"].values())
        sent = len(server.requests)
        run(compose(fast(tiny_model, *args, f"qa_generator.llm.api_base={server.url}"), tmp_path / "run2", root))
    second = json.loads((tmp_path / "run2" / "results.json").read_text())
    assert len(server.requests) - sent == 3  # only the failed chunks were asked again
    assert second["counts"]["generate_failed_chunks"] == 0 and second["cache"]["eval_set"] == "hit"
    assert (
        second["counts"]["train_pairs"] > first["counts"]["train_pairs"]
        or second["counts"]["eval_queries"] > first["counts"]["eval_queries"]
    )


# ---- training --------------------------------------------------------------------------------


def test_out_of_memory_says_what_to_lower():
    import torch

    from runner.stages.finetune.hf_trainer import run_training

    def oom():
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    with pytest.raises(RagtuneError, match=r"batch_size=256.*loss=cached_mnrl"):
        run_training(oom, batch_size=256)

    def cpu_oom():
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    with pytest.raises(RagtuneError, match="mini_batch_size"):
        run_training(cpu_oom, batch_size=64, loss="cached_mnrl")

    def other():
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):  # not every RuntimeError is memory
        run_training(other, batch_size=8)


def test_a_nan_loss_stops_training_and_saves_no_model(tiny_model, tmp_path, monkeypatch):
    import torch

    from runner.stages.finetune import trainer as finetune

    real = finetune.build_loss

    def nan_loss(*args, **kwargs):
        loss = real(*args, **kwargs)
        forward = loss.forward
        loss.forward = lambda *a, **k: forward(*a, **k) * torch.tensor(float("nan"))
        return loss

    monkeypatch.setattr(finetune, "build_loss", nan_loss)
    out = tmp_path / "run"
    with pytest.raises(RagtuneError, match="NaN.*not saved"):
        run(compose(fast(tiny_model, "logger=none", "finetune.max_steps=50"), out))
    assert not (out / "model").exists() and not (out / "results.json").exists()
    assert (out / "train_pairs.json").is_file()  # what was computed stays


# ---- faults ----------------------------------------------------------------------------------


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.time() + timeout
    while time.time() < end:
        if path.is_file() and text in path.read_text():
            return
        assert proc.poll() is None, "the run ended before the kill"
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared in {path}")


@pytest.mark.slow
def test_kill_9_during_finetuning_then_the_same_command_completes_like_an_unkilled_run(tmp_path):
    args = ["debug=fast", "logger=none", "finetune.max_steps=150"]
    clean = run_cli(*args, f"hydra.run.dir={tmp_path / 'clean'}", f"paths.root={tmp_path / 'clean_outputs'}")
    assert clean.returncode == 0, clean.stderr
    job = [*args, f"hydra.run.dir={tmp_path / 'job'}", f"paths.root={tmp_path / 'outputs'}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *job],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        _wait_for(tmp_path / "job" / "run.log", "[finetune] ...", proc)
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL and not (tmp_path / "job" / "results.json").exists()
    again = run_cli(*job)
    assert again.returncode == 0, again.stderr
    results = json.loads((tmp_path / "job" / "results.json").read_text())
    reference = json.loads((tmp_path / "clean" / "results.json").read_text())
    assert results["cache"] == {
        "generate": "hit",
        "dev_set": "hit",
        "eval_set": "hit",
        "choices_before_training": "hit",
        "evaluate_base": "hit",
        "base_embeddings": "hit",
    }  # nothing upstream even read
    for group in ("base", "finetuned"):
        for name, value in reference["metrics"][group].items():
            assert results["metrics"][group][name] == pytest.approx(value, abs=1e-6), (group, name)


WRITER = """
import sys, time
from pathlib import Path
from runner.infra.stage_cache import write_entry
root = Path(sys.argv[1])
print("ready", flush=True)
i = 0
while True:
    write_entry(root / "generate" / f"key{i % 7}", "generate", f"key{i % 7}", {"i": i % 7, "rows": [i % 7] * 200000})
    i += 1
"""


def test_kill_9_while_cache_entries_are_written_leaves_no_trusted_half_entry(tmp_path):
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        cache = StageCache(tmp_path)
        for j in range(7):
            entry = tmp_path / "generate" / f"key{j}"
            data = read_entry(entry)
            assert data is None or (data["i"] == j and data["rows"] == [j] * 200000)
            value = cache.run("generate", f"key{j}", lambda: {"i": j, "rows": [j] * 200000}, dict, dict)
            assert value["i"] == j and len(value["rows"]) == 200000
    leftovers = [p for p in (tmp_path / "generate").iterdir() if p.name.startswith(".")]
    assert all(read_entry(p) is None or p.name.startswith(".") for p in leftovers)  # temp dirs never read


# ---- security --------------------------------------------------------------------------------


def test_a_key_from_a_secrets_file_reaches_the_server_and_nowhere_else(tmp_path):
    key = "sk-from-file-0123456789abcdef"
    secrets = tmp_path / "secrets.env"
    secrets.write_text(f"# my keys\nexport OPENAI_API_KEY='{key}'\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    with LlmServer() as server:
        server.echo_auth_once = True  # a server that quotes the key in an error: the log must not
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "runner",
                "debug=fast",
                "logger.mode=offline",
                "qa_generator=llm",
                f"qa_generator.llm.api_base={server.url}",
                "qa_generator.llm.model=m",
                "qa_generator.backoff_s=0.01",
                "finetune.batch_size=4",
                f"secrets_file={secrets}",
                f"hydra.run.dir={tmp_path / 'run'}",
                f"paths.root={tmp_path / 'outputs'}",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=env,
            timeout=600,
        )
    assert r.returncode == 0, r.stdout + r.stderr
    assert server.auth == {f"Bearer {key}"}
    log = (tmp_path / "run" / "run.log").read_text()
    assert "invalid key Bearer ***redacted***" in log  # the server's error, masked
    files = [f for f in (tmp_path / "run").rglob("*") if f.is_file()] + [
        f for f in (tmp_path / "outputs").rglob("*") if f.is_file()
    ]
    assert any(f.suffix == ".wandb" for f in files)
    for f in files:
        assert key.encode() not in f.read_bytes(), f
    assert key not in r.stdout + r.stderr
    shown = run_cli("qa_generator=llm", "qa_generator.llm.model=m", "--cfg", "job", "--resolve", env={"OPENAI_API_KEY": key})
    assert shown.returncode == 0 and key not in shown.stdout and "***redacted***" in shown.stdout


def test_a_missing_secrets_file_is_a_clear_error(tmp_path):
    r = run_cli(
        "debug=fast",
        "logger=none",
        f"secrets_file={tmp_path / 'nope.env'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"paths.root={tmp_path / 'outputs'}",
    )
    clean_failure(r, "secrets_file=", "KEY=VALUE")


def test_trust_remote_code_is_off_by_default_and_warns_when_on(tiny_model, tmp_path, caplog):
    from runner.infra.models import load_model

    assert compose([], tmp_path).base_model.trust_remote_code is False
    cfg = compose(fast(tiny_model, "base_model.trust_remote_code=true"), tmp_path)
    with caplog.at_level("WARNING", logger="ragtune"):
        load_model(cfg.base_model, "cpu")
    assert "trust_remote_code=true" in caplog.text


def test_adapter_files_are_loaded_without_unpickling_code(tmp_path):
    import pickle

    from llama_index.embeddings.adapter.utils import LinearLayer

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    LinearLayer(4, 4).save(str(tmp_path))
    with open(tmp_path / "pytorch_model.bin", "wb") as f:
        pickle.dump(Payload(), f)
    with pytest.raises(pickle.UnpicklingError):
        LinearLayer.load(str(tmp_path))
    assert not marker.exists()


def test_truncation_warning_says_what_can_still_be_raised(tiny_model, caplog):
    from sentence_transformers import SentenceTransformer

    from runner.stages.evaluate.scoring import EvalSet
    from runner.base_eval import truncation_report

    model = SentenceTransformer(str(tiny_model), device="cpu")
    positions = model[0].auto_model.config.max_position_embeddings
    long = EvalSet({"q": "short"}, {"d": "word " * (positions + 50)}, {"q": ["d"]})
    with caplog.at_level("WARNING", logger="ragtune"):
        model.max_seq_length = positions // 2
        assert truncation_report(model, None, long, {})["passages_over"] == 1.0
        model.max_seq_length = positions
        truncation_report(model, None, long, {})
        model.max_seq_length = positions // 2  # auto kept the model's own window on the training side's evidence
        kept = {"own": positions // 2, "chosen": positions // 2, "candidates": [{}, {}]}
        truncation_report(model, None, long, {"max_seq_length": kept})
    first, second, third = [r.getMessage() for r in caplog.records]
    assert f"raise base_model.max_seq_length (this model has {positions} positions)" in first
    assert "raise" not in second and "no more positions" in second
    assert f"auto kept the model's own {positions // 2} on the training side's questions (choices.max_seq_length)" in third


def test_a_secret_inside_a_longer_value_is_masked_and_nothing_else_is(tmp_path, monkeypatch):
    """`api_base: https://host/v1?key=${secret:K}`: the key is masked inside the URL in results.json-bound
    configs, cache keys and logs; a secrets_file value that is not a credential (`MODE=auto`) masks nothing."""
    from runner.infra import secrets

    monkeypatch.setattr(secrets, "_values", set())
    key = "sk-inside-a-url-0123456789"
    monkeypatch.setenv("PROXY_KEY", key)
    file = tmp_path / "secrets.env"
    file.write_text("MODE=auto\nHF_TOKEN=hf_abcdefghijklmnop\n")
    monkeypatch.delenv("MODE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    secrets.load_secrets_file(str(file))
    secrets.reveal()
    url = f"https://host/v1?key={secrets.secret('PROXY_KEY')}"
    tree = {"llm": {"api_base": url, "mode": "auto", "model": "m"}, "device": "auto"}
    redacted = secrets.redact(tree)
    assert redacted == {"llm": {"api_base": "https://host/v1?key=***redacted***", "mode": "auto", "model": "m"}, "device": "auto"}
    keyed = secrets.key_view(tree)
    assert key not in json.dumps(keyed) and keyed["llm"]["api_base"] == f"https://host/v1?key={secrets.CREDENTIAL}"
    assert keyed["llm"]["mode"] == "auto" and secrets.mask(f"token hf_abcdefghijklmnop and {url}") == (
        "token ***redacted*** and https://host/v1?key=***redacted***"
    )


def test_a_literal_key_on_the_command_line_is_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "run"
    r = run_cli("debug=fast", "qa_generator.llm.api_key=sk-literal-key-12345", f"hydra.run.dir={out}")
    assert r.returncode == 2 and not out.exists()
    assert "qa_generator.llm.api_key=" in r.stderr and "secret" in r.stderr and "sk-literal-key-12345" not in r.stderr
    from runner.infra.secrets import literal_secret_override

    assert (
        literal_secret_override(["qa_generator.llm.api_key=${secret:MY_KEY}", "finetune.max_tokens=5", "x.api_key=null"]) is None
    )
    # a credential inside a dict or a list given on the command line is refused the same way
    for arg, key in (
        ("qa_generator.llm={api_key:sk-literal-key-12345,model:m}", "qa_generator.llm.api_key"),
        (
            "qa_generator.llm.default_headers={Authorization:'Bearer sk-literal-key-12345'}",
            "qa_generator.llm.default_headers.Authorization",
        ),
        ("+qa_generator.llm.extra=[{token:hf_literal_token_123}]", "qa_generator.llm.extra[0].token"),
    ):
        message = literal_secret_override(["debug=fast", arg])
        assert message and message.startswith(f"{key}=") and "sk-literal" not in message and "hf_literal" not in message, arg
    assert literal_secret_override(["qa_generator.llm={api_key:'${secret:K}',model:m}", "x={max_tokens:5}"]) is None
    r = run_cli("debug=fast", "qa_generator.llm={api_key:sk-literal-key-12345}", f"hydra.run.dir={out}")
    assert r.returncode == 2 and not out.exists() and "sk-literal-key-12345" not in r.stderr + r.stdout


def test_a_credential_the_client_reads_from_the_environment_is_masked_in_the_log(monkeypatch, caplog):
    """qa_generator/llm=openai: the client reads OPENAI_API_KEY itself, so the key never passes `${secret:}`;
    it is a secret of the run all the same."""
    import logging

    from runner.infra import secrets

    monkeypatch.setattr(secrets, "_values", set())
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment-999")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")  # not a credential's name: stays visible
    assert "OPENAI_API_KEY" in secrets.register_environment()
    handler = logging.StreamHandler()
    handler.addFilter(secrets.RedactSecrets())
    record = logging.LogRecord("x", logging.INFO, "f", 1, "request failed: key sk-from-the-environment-999, %s", ("false",), None)
    handler.filter(record)
    assert record.getMessage() == "request failed: key ***redacted***, false"


# ---- bad input that used to end in a traceback -----------------------------------------------------

GOOD = {"queries": {"q1": "what is a cat"}, "corpus": {"d1": "a cat is an animal"}, "relevant_docs": {"q1": ["d1"]}}


@pytest.mark.parametrize(
    "change, needle",
    [
        ({"relevant_docs": {"q1": None}}, "relevant_docs['q1'] is null, not a list of corpus ids"),
        ({"relevant_docs": {"q1": "d1"}}, "relevant_docs['q1'] is \"d1\", not a list"),
        ({"queries": {"q1": 7}}, "'queries' holds 1 value(s) that are not text (first: 'q1' is int)"),
        ({"corpus": {"d1": ["a", "list"]}}, "'corpus' holds 1 value(s) that are not text"),
    ],
)
def test_a_malformed_pairs_file_is_one_clear_error(tmp_path, change, needle):
    from runner.data.pairs import read_qa_dataset
    from runner.infra.errors import RagtuneError

    path = tmp_path / "pairs.json"
    path.write_text(json.dumps({**GOOD, **change}))
    with pytest.raises(RagtuneError) as err:
        read_qa_dataset(path, "eval_set.path")
    assert needle in str(err.value) and "eval_set.path=" in str(err.value)


def _beir(tmp_path, corpus_lines: list[str], qrels: str) -> Path:
    root = tmp_path / "beir"
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(corpus_lines) + "\n")
    (root / "queries.jsonl").write_text('{"_id": "q1", "text": "what is a cat"}\n')
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def test_a_beir_corpus_line_without_id_or_a_score_that_is_no_number_is_one_clear_error(tmp_path):
    from runner.data.beir import beir_problems, read_beir

    cases = [
        (['{"title": "t", "text": "a cat"}'], "q1\td1\t1\n", 'record 1, has no "_id"'),
        (['{"_id": "d1", "text": 42}'], "q1\td1\t1\n", '"text" is int, not text'),
        (['{"_id": "d1", "text": "a cat"}'], "q1\td1\thigh\n", "the score 'high' is not a number"),
    ]
    for i, (corpus, qrels, needle) in enumerate(cases):
        problems = beir_problems(_beir(tmp_path / str(i), corpus, qrels), "test", "eval_set.path")
        assert len(problems) == 1 and needle in problems[0], problems
    assert read_beir(_beir(tmp_path / "ok", ['{"_id": "d1", "text": "a cat"}'], "q1\td1\t1\n"), "test")["grades"] == {
        "q1": {"d1": 1.0}
    }
    r = run_cli("finetune=none", "eval_set=beir", f"eval_set.path={_beir(tmp_path / 'cli', cases[2][0], cases[2][1])}")
    clean_failure(r, "is not a number")


def test_a_file_whose_name_is_not_utf8_is_skipped_and_said(tmp_path):
    from runner.stages.load.corpus import load_directory

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "good.txt").write_text("A cat is an animal that purrs. " * 5)
    bad = os.path.join(os.fsencode(docs), "caf\xe9.txt".encode("latin-1"))
    with open(bad, "wb") as f:
        f.write(b"Cafe text that is fine inside. " * 5)
    loaded = load_directory(str(docs))
    assert [d.id_ for d in loaded.documents] == ["good.txt"]
    ((name, reason),) = loaded.skipped.items()
    assert "not UTF-8" in reason and "rename" in reason and json.dumps(name)  # the name itself is writable


def test_an_empty_npy_in_a_cache_entry_is_computed_again_not_a_traceback(tmp_path):
    import numpy as np

    from runner.infra.stage_cache import StageCache

    stages = StageCache(tmp_path)
    key = stages.key("base_embeddings", {"x": 1})
    make = lambda: {"ids": ["a"], "arrays": {"emb": np.ones((1, 2))}}  # noqa: E731
    stages.run("base_embeddings", key, make, lambda v: dict(v), lambda d: d)
    (tmp_path / "base_embeddings" / key / "emb.npy").write_bytes(b"")  # a disk that filled up
    again = StageCache(tmp_path)
    value = again.run("base_embeddings", key, make, lambda v: dict(v), lambda d: d)
    assert again.status["base_embeddings"] == "miss" and value["arrays"]["emb"].shape == (1, 2)
    assert np.load(tmp_path / "base_embeddings" / key / "emb.npy").shape == (1, 2)  # the entry was replaced


def test_resume_reuses_a_finished_run_only_while_its_files_and_code_are_the_same(tiny_model, tmp_path, monkeypatch):
    """resume=true once compared the config alone: an edited corpus file returned the old results.json."""
    from pydoc_data.topics import topics

    docs = tmp_path / "docs"
    docs.mkdir()
    for name in sorted(topics)[:8]:
        (docs / f"{name}.md").write_text(f"# {name}\n\n{topics[name]}")
    out = tmp_path / "run"
    overrides = fast(tiny_model, "logger=none", "corpus=directory", f"corpus.path={docs}", "resume=true")
    run(compose(overrides, out))
    first = json.loads((out / "results.json").read_text())
    assert first["run_key"]
    stamp = (out / "results.json").stat().st_mtime_ns
    run(compose(overrides, out))  # the same config, files and code: skipped
    assert (out / "results.json").stat().st_mtime_ns == stamp
    edited = docs / f"{sorted(topics)[0]}.md"
    edited.write_text(edited.read_text() + "\n\nA sentence the earlier run never read, about lighthouses at dusk.")
    run(compose(overrides, out))  # the corpus changed: run again
    again = json.loads((out / "results.json").read_text())
    assert (out / "results.json").stat().st_mtime_ns != stamp and again["run_key"] != first["run_key"]
    stamp = (out / "results.json").stat().st_mtime_ns
    import dataclasses

    from runner.infra import code_deps

    real = code_deps.closure  # a module the experiment runs changed: its syntax trees' digest changes (test_cache_keys)
    monkeypatch.setattr(code_deps, "closure", lambda *a, **kw: dataclasses.replace(real(*a, **kw), digest="edited"))
    run(compose(overrides, out))
    assert (out / "results.json").stat().st_mtime_ns != stamp


def test_each_new_refusal_keeps_what_the_cache_holds(tiny_model, tmp_path):
    """The refusals added for a newcomer's first hour stop before any work, and the stages an earlier run
    computed stay in the cache, untouched, for the fixed command."""
    root = tmp_path / "outputs"
    run(compose(fast(tiny_model, "logger=none"), tmp_path / "run", root))
    cache = root / "cache"
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("manifest.json")}
    assert before
    for args, said in (
        (("corpus=directory",), "corpus.path is required by corpus=directory"),
        (("finetune.lr=1e-4",), "did you mean finetune.learning_rate=1e-4"),
        (("corpus.path=docs/",), "add corpus=directory corpus.path=docs/"),
        (("finetune=adapter", "export=onnx"), "finetune=adapter trains a LlamaIndex adapter"),
        (("qa_generator.llm={api_key:sk-literal-key-12345}",), "qa_generator.llm.api_key="),
        (("precision=fp8",), "precision=fp8 is not one of"),
    ):
        r = run_cli(*fast(tiny_model, "logger=none"), *args, f"paths.root={root}", f"hydra.run.dir={tmp_path / 'refused'}")
        assert r.returncode == 2 and said in r.stdout + r.stderr and "Traceback" not in r.stdout + r.stderr, (args, r.stderr)
        assert not (tmp_path / "refused" / "results.json").exists()
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("manifest.json")} == before
