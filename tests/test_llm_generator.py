"""The LLM question generator against a real OpenAI-compatible server on loopback, through
llama-index's real client."""

from __future__ import annotations

import json

import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.llms.openai_like import OpenAILike

from conftest import compose, fast
from llm_server import LlmServer
from runner.errors import RagtuneError
from runner.generate_llm import clean_questions, llm_pairs
from runner.pipeline import run


def nodes(*markers: str) -> list[TextNode]:
    out = []
    for i, m in enumerate(markers):
        n = TextNode(id_=f"doc{i}#0000", text=f"{m} chunk number {i} explains generators and iterators in Python.")
        n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i}")
        out.append(n)
    return out


def client(server: LlmServer) -> OpenAILike:
    return OpenAILike(model="test-model", api_base=server.url, api_key="not-needed", is_chat_model=True,
                      max_retries=0, timeout=10)


def test_clean_questions_drops_preamble_numbering_short_lines_and_duplicates():
    text = "Sure! Here are 3 questions:\n\n1. What is a generator?\n2) What is a generator?\n- Why use yield here?\nOk\n**Q3:** How do iterators end?"
    assert clean_questions(text, 5) == ["What is a generator?", "Why use yield here?", "How do iterators end?"]
    assert clean_questions(text, 1) == ["What is a generator?"]


def test_questions_come_concurrently_and_failures_are_retried_then_skipped(tmp_path):
    with LlmServer() as server:
        ds = llm_pairs(nodes("SLOW", "SLOW", "SLOW", "SLOW", "SLOW", "FAIL500", "GARBAGE", "plain"),
                       llm=client(server), num_questions_per_chunk=2, max_concurrency=8, retries=1,
                       backoff_s=0.01, cache_dir=str(tmp_path))
    assert server.max_in_flight >= 4  # parallel requests, not one chunk at a time
    failing = [p for p in server.requests if "FAIL500" in p or "GARBAGE" in p]
    assert len(failing) == 4  # each failing chunk: the first try and one retry
    assert set(ds.corpus) == {f"doc{i}#0000" for i in (0, 1, 2, 3, 4, 7)}
    assert len(ds.queries) == 12  # 2 per answered chunk: the duplicate and "Ok" are gone
    q = ds.queries["doc7#0000/q0"]
    assert q == "What does plain chunk number mean?" and ds.relevant_docs["doc7#0000/q0"] == ["doc7#0000"]


def test_questions_paid_for_are_kept_and_reused_when_the_server_is_down(tmp_path):
    with LlmServer() as server:
        first = llm_pairs(nodes("a", "b", "c"), llm=client(server), cache_dir=str(tmp_path), backoff_s=0.01)
        server.fail_all = True
        n = len(server.requests)
        again = llm_pairs(nodes("a", "b", "c"), llm=client(server), cache_dir=str(tmp_path), backoff_s=0.01)
        assert len(server.requests) == n  # nothing asked again
    assert again.model_dump() == first.model_dump()


def test_every_chunk_failing_is_a_clear_error_naming_the_endpoint(tmp_path):
    with LlmServer() as server:
        with pytest.raises(RagtuneError, match=f"OpenAILike at {server.url}.*failed on all 2 chunks"):
            llm_pairs(nodes("FAIL500", "FAIL500"), llm=client(server), retries=1, backoff_s=0.01)


def test_max_chunks_is_a_budget(tmp_path):
    with LlmServer() as server:
        ds = llm_pairs(nodes("a", "b", "c", "d"), llm=client(server), max_chunks=2, backoff_s=0.01)
    assert len(server.requests) == 2 and set(ds.corpus) == {"doc0#0000", "doc1#0000"}


def test_the_runner_uses_the_llm_generator_from_the_command_line_config(tiny_model, tmp_path, monkeypatch):
    secret = "sk-test-secret-value-42"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    out = tmp_path / "run"
    with LlmServer() as server:
        run(compose(fast(tiny_model, "logger=none", "qa_generator=llm", "qa_generator/llm=openai_like",
                         f"qa_generator.llm.api_base={server.url}", "qa_generator.llm.model=test-model",
                         "qa_generator.num_questions_per_chunk=2", "qa_generator.backoff_s=0.01",
                         "finetune.batch_size=4"), out))
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["train_pairs"] > 10 and results["metrics"]["finetuned"]
    assert results["config"]["qa_generator"]["llm"]["api_key"] == "***redacted***"
    assert secret not in (out / "results.json").read_text()
    pairs = json.loads((out / "train_pairs.json").read_text())
    assert all(q.startswith(("What does", "How is")) for q in pairs["queries"].values())
