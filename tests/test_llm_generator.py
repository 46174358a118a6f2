"""The LLM question generator against a real OpenAI-compatible server on loopback, through
llama-index's real client."""

from __future__ import annotations

import json

import pytest
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.llms.openai_like import OpenAILike

from conftest import compose, fast
from llm_server import LlmServer
from runner.infra.errors import RagtuneError
from runner.stages.generate.llm import clean_questions, llm_pairs
from runner.pipeline import run


def nodes(*markers: str) -> list[TextNode]:
    out = []
    for i, m in enumerate(markers):
        n = TextNode(id_=f"doc{i}#0000", text=f"{m} chunk number {i} explains generators and iterators in Python.")
        n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=f"doc{i}")
        out.append(n)
    return out


def client(server: LlmServer) -> OpenAILike:
    return OpenAILike(
        model="test-model", api_base=server.url, api_key="not-needed", is_chat_model=True, max_retries=0, timeout=10
    )


def test_clean_questions_drops_preamble_numbering_short_lines_and_duplicates():
    text = (
        "Sure! Here are 3 questions:\n\n1. What is a generator?\n2) What is a generator?\n- Why use yield here?\nOk\n"
        "**Q3:** How do iterators end?"
    )
    assert clean_questions(text, 5) == ["What is a generator?", "Why use yield here?", "How do iterators end?"]
    assert clean_questions(text, 1) == ["What is a generator?"]


def test_questions_come_concurrently_and_failures_are_retried_then_skipped(tmp_path):
    with LlmServer() as server:
        ds = llm_pairs(
            nodes("SLOW", "SLOW", "SLOW", "SLOW", "SLOW", "FAIL500", "GARBAGE", "plain"),
            llm=client(server),
            num_questions_per_chunk=2,
            max_concurrency=8,
            retries=1,
            backoff_s=0.01,
            cache_dir=str(tmp_path),
        )
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
        run(
            compose(
                fast(
                    tiny_model,
                    "logger=none",
                    "qa_generator=llm",
                    "qa_generator/llm=openai_like",
                    f"qa_generator.llm.api_base={server.url}",
                    "qa_generator.llm.model=test-model",
                    "qa_generator.num_questions_per_chunk=2",
                    "qa_generator.backoff_s=0.01",
                    "finetune.batch_size=4",
                ),
                out,
            )
        )
    results = json.loads((out / "results.json").read_text())
    assert results["counts"]["train_pairs"] > 10 and results["metrics"]["finetuned"]
    assert results["config"]["qa_generator"]["llm"]["api_key"] == "***redacted***"
    assert secret not in (out / "results.json").read_text()
    pairs = json.loads((out / "train_pairs.json").read_text())
    assert all(q.startswith(("What does", "How is")) for q in pairs["queries"].values())


WORDS = ["which", "python", "statement", "loop", "binds", "names", "values", "iterator", "returns", "raises"]


def tiny_instruct_model(path) -> str:
    """A 1-layer GPT-2 with a word-level tokenizer and a chat template, built here: whatever it
    generates is a line of real words, so the whole local-model path can be checked offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[EOS]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast_tok = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", pad_token="[EOS]")
    fast_tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    fast_tok.save_pretrained(path)
    import torch

    torch.manual_seed(0)
    model = GPT2LMHeadModel(
        GPT2Config(
            vocab_size=len(vocab),
            n_positions=4096,
            n_embd=32,
            n_layer=1,
            n_head=2,
            eos_token_id=1,
            bos_token_id=1,
            pad_token_id=1,
        )
    )
    with torch.no_grad():  # never end early: the [EOS] logit can't win
        model.lm_head.weight[1].fill_(0.0)
        model.transformer.wte.weight[1].fill_(0.0)
    model.save_pretrained(path)
    return str(path)


def test_a_local_transformers_model_generates_questions_through_its_chat_template(tiny_model, tmp_path):
    llm_dir = tiny_instruct_model(tmp_path / "tiny-instruct")
    out = tmp_path / "run"
    run(
        compose(
            fast(
                tiny_model,
                "logger=none",
                "qa_generator=llm",
                "qa_generator/llm=huggingface",
                f"qa_generator.llm.model_name={llm_dir}",
                "qa_generator.llm.max_new_tokens=8",
                "qa_generator.llm.device_map=cpu",
                "qa_generator.max_chunks=6",
                "qa_generator.num_questions_per_chunk=1",
                "finetune.batch_size=2",
            ),
            out,
        )
    )
    results = json.loads((out / "results.json").read_text())
    pairs = json.loads((out / "train_pairs.json").read_text())
    assert 1 <= len(pairs["queries"]) <= 6 and results["metrics"]["finetuned"]
    for q in pairs["queries"].values():  # 8 generated words (special tokens skipped), nothing else
        assert 2 <= len(q.split()) <= 8 and set(q.split()) <= set(WORDS), q


def test_experiment_seed_guide_is_the_llama_index_guide_end_to_end(tiny_model, tmp_path):
    out = tmp_path / "run"
    with LlmServer() as server:
        cfg = compose(
            fast(
                tiny_model,
                "experiment=seed_guide",
                "logger=none",
                f"qa_generator.llm.api_base={server.url}",
                "qa_generator.llm.model=test-model",
                "qa_generator.backoff_s=0.01",
            ),
            out,
        )
        assert cfg.qa_generator.num_questions_per_chunk == 2 and cfg.finetune.epochs == 2
        assert cfg.finetune._target_.endswith("train_llama_index_engine") and cfg.evaluate.engine == "llama_index"
        assert compose(["experiment=seed_guide"], out).chunker.chunk_size == 1024  # debug=fast shrinks it
        value = run(cfg)
    results = json.loads((out / "results.json").read_text())
    assert set(results["metrics"]["finetuned"]) == {"hit_rate@5", "mrr@5", "precision@5", "recall@5", "ndcg@5"}
    assert value == results["metrics"]["finetuned"]["hit_rate@5"]
    assert max(len(v) for v in json.loads((out / "train_pairs.json").read_text())["relevant_docs"].values()) == 1


@pytest.mark.parametrize("option", ["openai", "ollama"])
def test_the_openai_and_ollama_options_run_against_the_local_server(option, tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-real")
    out = tmp_path / "run"
    with LlmServer() as server:
        endpoint = {
            "openai": [f"+qa_generator.llm.api_base={server.url}"],
            "ollama": [f"qa_generator.llm.base_url={server.base}", "qa_generator.llm.model=llama3.1"],
        }[option]
        run(
            compose(
                fast(
                    tiny_model,
                    "logger=none",
                    "qa_generator=llm",
                    f"qa_generator/llm={option}",
                    *endpoint,
                    "qa_generator.max_chunks=4",
                    "qa_generator.backoff_s=0.01",
                    "finetune.batch_size=2",
                ),
                out,
            )
        )
    pairs = json.loads((out / "train_pairs.json").read_text())
    assert len(pairs["queries"]) >= 4 and all(q.startswith(("What does", "How is")) for q in pairs["queries"].values())
    assert len(server.requests) >= 4
