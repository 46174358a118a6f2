"""The stage cache: keys, hits, half-written entries, and two writers of one key at once."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from runner.infra.stage_cache import StageCache, read_entry, write_entry


def test_keys_follow_config_and_inputs(tmp_path):
    c = StageCache(tmp_path)
    k = c.key("chunk", {"chunk_size": 128}, ["abc"])
    assert k == c.key("chunk", {"chunk_size": 128}, ["abc"])
    assert k != c.key("chunk", {"chunk_size": 96}, ["abc"])
    assert k != c.key("chunk", {"chunk_size": 128}, ["abd"])
    assert k != c.key("split", {"chunk_size": 128}, ["abc"])


def test_a_miss_computes_and_stores_a_hit_does_not_compute(tmp_path):
    c = StageCache(tmp_path)
    calls = []
    compute = lambda: calls.append(1) or {"n": 3}  # noqa: E731
    assert c.run("load", "k1", compute, dict, dict) == {"n": 3}
    assert c.status == {"load": "miss"}
    c2 = StageCache(tmp_path)
    assert c2.run("load", "k1", compute, dict, dict) == {"n": 3}
    assert c2.status == {"load": "hit"} and len(calls) == 1
    off = StageCache(tmp_path, enabled=False)
    off.run("load", "k1", compute, dict, dict)
    assert off.status == {"load": "off"} and len(calls) == 2


def test_an_entry_without_manifest_is_never_trusted_and_gets_replaced(tmp_path):
    entry = tmp_path / "chunk" / "k"
    entry.mkdir(parents=True)
    (entry / "data.json").write_text('{"half": ')  # a killed writer's leftovers
    assert read_entry(entry) is None
    c = StageCache(tmp_path)
    assert c.run("chunk", "k", lambda: [1, 2], list, list) == [1, 2] and c.status["chunk"] == "miss"
    assert read_entry(entry) == [1, 2]


def _writer(root: str, n: int) -> None:
    for i in range(n):
        write_entry(Path(root) / "generate" / f"key{i}", "generate", f"key{i}", {"rows": list(range(2000)), "i": i})


def test_two_processes_writing_the_same_keys_at_once_leave_complete_entries(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), 40)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0]
    for i in range(40):
        assert read_entry(tmp_path / "generate" / f"key{i}") == {"rows": list(range(2000)), "i": i}
    assert not [p for p in (tmp_path / "generate").iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_the_job_that_loses_the_write_uses_the_entry_that_was_stored(tmp_path):
    """Two jobs of a parallel sweep compute the same key (an LLM at temperature > 0 answers differently each
    time): the one whose write comes second trains and scores on the stored entry, not on its own answers."""
    first, second = StageCache(tmp_path), StageCache(tmp_path)
    key = first.key("generate", {"temperature": 0.7})

    def slow_answers():  # while this job computes, the other one finishes and stores its own answers
        first.run("generate", key, lambda: {"q1": "the first job's question"}, dict, dict)
        return {"q1": "the second job's question"}

    value = second.run("generate", key, slow_answers, dict, dict)
    assert value == {"q1": "the first job's question"} == read_entry(tmp_path / "generate" / key)
    assert first.status["generate"] == "miss" and "another job stored it first" in second.status["generate"]
    assert write_entry(tmp_path / "generate" / key, "generate", key, {"q1": "late"}) is False
    assert read_entry(tmp_path / "generate" / key) == {"q1": "the first job's question"}
