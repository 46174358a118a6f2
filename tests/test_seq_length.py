"""`base_model.max_seq_length: auto`: the window chosen on every training-side question, from the training side's passages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import compose, fast
from runner.data.eval_set import EvalSet
from runner.pipeline import run
from runner.stages.evaluate.schema import max_seq_length_problems as check
from runner.stages.evaluate.seq_length import candidates, choose_max_seq_length

FILLER = (
    "The committee reviewed the annual report and the attached schedules in the usual order, noting that "
    "nothing in the general section had changed since the previous filing and that the figures were "
    "presented on the same basis as before. "
) * 7
TOPICS = [
    "volcanic ash grounded every flight in the northern region",
    "the bakery switched to sourdough starters",
    "a copper mine flooded after the spring storms",
    "the orchestra premiered a symphony for glass harmonica",
    "rainfall doubled the salmon run in the river delta",
    "the ferry company bought three electric vessels",
    "a chess prodigy won the regional championship",
    "lithium prices fell after the new refinery opened",
    "the museum returned a bronze statue to its origin",
    "wildfire smoke closed schools for a week",
    "the railway replaced its signalling with radio control",
    "a honeybee virus spread through the valley farms",
    "the satellite imaged an iceberg the size of a city",
    "tram drivers voted to strike over night shifts",
    "the vineyard lost its harvest to hail",
    "a startup printed houses from recycled plastic",
    "the glacier retreated two kilometres in a decade",
    "hospital wait times fell after the new clinic opened",
    "the bridge was closed for corrosion repairs",
    "an antique map sold for a record sum",
]


def _dev() -> EvalSet:
    """Passages whose first ~290 word pieces are the same filler and whose topic comes after it:
    a 256-piece window sees only the filler, a 384-piece one the topic the question asks about."""
    corpus = {f"p{i}": f"{FILLER} Then the report turned to one matter: {t}." for i, t in enumerate(TOPICS)}
    queries = {f"q{i}": f"What happened: {t}?" for i, t in enumerate(TOPICS)}
    return EvalSet(queries, corpus, {f"q{i}": [f"p{i}"] for i in range(len(TOPICS))})


def test_candidates_grow_only_as_far_as_the_passages_need_and_the_model_allows():
    assert candidates(256, 512, np.array([100] * 96 + [600] * 4)) == [256]  # 95% fit: nothing to choose
    assert candidates(256, 512, np.array([300] * 100)) == [256, 384]
    assert candidates(256, 512, np.array([900] * 100)) == [256, 384, 512]
    assert candidates(512, 512, np.array([900] * 100)) == [512]  # the position table is full
    assert candidates(128, 300, np.array([900] * 100)) == [128, 256, 300]
    assert check("auto") == check(None) == check(256) == []
    assert "base_model.max_seq_length=0 is not a length" in check(0)[0] and "auto" in check("long")[0]


def test_a_longer_window_is_chosen_when_the_answer_lies_past_the_models_own(minilm):
    from runner.infra.models import load_model

    model = load_model(minilm, "cpu")
    assert model.max_seq_length == 256
    side = _dev()
    record, encoded = choose_max_seq_length(model, "minilm", side, "ndcg@10", 10, 16, "fp32", 1000, 0, "test")
    by_length = {c["value"]: c for c in record["candidates"]}
    assert list(by_length) == [256, 384] and 256 < record["passage_lengths"]["p95"] <= 384
    assert by_length[256]["passages_cut"] == 1.0 and by_length[384]["passages_cut"] == 0.0
    assert by_length[384]["score"] > by_length[256]["score"] + 0.3 and record["margin_ci95"][0] > 0
    assert record["chosen"] == 384 == record["default"] and model.max_seq_length == 384 and record["decided_by"] == "evidence"
    assert record["questions"] == len(TOPICS) and record["stability"] == 1.0
    index, query_emb = encoded  # the winner's encoding of the training side, for the hybrid's choice
    assert query_emb.shape[0] == len(TOPICS) and index.doc_ids == sorted(side.corpus)


def test_a_shorter_window_needs_to_be_clearly_better_than_the_longest(minilm):
    """The written default is the longest candidate; the model's own window wins only when clearly better."""
    from runner.infra.models import load_model

    model = load_model(minilm, "cpu")
    # the topic comes first, then the filler: both windows see it, and score the same: the default (384) stays
    corpus = {f"p{i}": f"The report turned to one matter: {t}. {FILLER}" for i, t in enumerate(TOPICS)}
    side = EvalSet(
        {f"q{i}": f"What happened: {t}?" for i, t in enumerate(TOPICS)}, corpus, {f"q{i}": [f"p{i}"] for i in range(20)}
    )
    record, _ = choose_max_seq_length(model, "minilm", side, "ndcg@10", 10, 16, "fp32", 1000, 0, "test")
    assert [c["value"] for c in record["candidates"]] == [256, 384] and record["default"] == 384
    assert record["chosen"] == 384 and model.max_seq_length == 384
    assert record["best"] == 384 or record["vs_default"]["ci95"][0] <= 0


def test_short_passages_keep_the_models_own_window_without_encoding_anything(minilm):
    from runner.infra.models import load_model

    model = load_model(minilm, "cpu")
    side = EvalSet({"q": "cats"}, {f"p{i}": f"A cat sat on mat {i}." for i in range(20)}, {"q": ["p0"]})
    record, encoded = choose_max_seq_length(model, "minilm", side, "ndcg@10", 10, 16, "fp32", 1000, 0)
    assert encoded is None and record["chosen"] == 256 and record["questions"] == 0 and record["decided_by"] == "default"
    assert record["candidates"] == [{"value": 256, "passages_cut": 0.0}] and "holds 95%" in record["reason"]


def test_auto_in_a_run_is_recorded_saved_with_the_model_and_cached(tiny_model, tmp_path):
    overrides = fast(
        tiny_model,
        "logger=none",
        "base_model.max_seq_length=auto",
        "chunker.chunk_size=400",
        "chunker.fit_window=false",
        "chunker.chunk_overlap=0",
    )
    root = tmp_path / "outputs"
    run(compose(overrides, tmp_path / "a", root))
    results = json.loads((tmp_path / "a" / "results.json").read_text())
    record = results["choices"]["max_seq_length"]
    lengths = [c["value"] for c in record["candidates"]]
    assert lengths[0] == 128 and len(lengths) > 1 and all("score" in c for c in record["candidates"])
    assert record["chosen"] in lengths and results["truncation"]["max_seq_length"] == record["chosen"]
    assert results["config"]["base_model"]["max_seq_length"] == "auto"  # what was asked; choices: what was done
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(tmp_path / "a" / "model"), device="cpu").max_seq_length == record["chosen"]
    assert results["cache"]["choices_before_training"] == "miss"
    run(compose(overrides, tmp_path / "b", root))
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert again["cache"]["choices_before_training"] == "hit"
    for name in ("max_seq_length", "bm25", "bm25_params", "fusion_hybrid_base"):  # read back, not made anew
        assert again["choices"][name] == results["choices"][name], name


@pytest.fixture(scope="module")
def minilm():
    from omegaconf import OmegaConf

    from runner.infra.models import minilm_path

    return OmegaConf.create(
        {
            "name_or_path": minilm_path(),
            "revision": None,
            "max_seq_length": "auto",
            "query_prompt": "",
            "passage_prompt": "",
            "trust_remote_code": False,
            "build": None,
        }
    )


def test_a_bad_window_is_a_clear_config_error(tiny_model, tmp_path):
    from runner.checks import config_problems

    problems = config_problems(compose(fast(tiny_model, "base_model.max_seq_length=-5"), tmp_path))
    assert any("base_model.max_seq_length=-5 is not a length" in p and "auto" in p for p in problems)
    assert not any("max_seq_length" in p for p in config_problems(compose(fast(tiny_model), tmp_path)))
