"""`base_model.max_seq_length: auto`: the window chosen on every training-side question, from the training side's passages."""

from __future__ import annotations

import json
from dataclasses import asdict

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
    assert (
        record["chosen"] == 384 == record["default"]
        and model.max_seq_length == 384
        and record["decided_by"] in ("evidence", "both")
    )
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
    assert encoded is None and record["chosen"] == 256 and record["questions"] == 0 and record["decided_by"] == "prior"
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


def _tied_side() -> EvalSet:
    """The topic first, then the filler: 256 and 384 both see the topic and score the same."""
    corpus = {f"p{i}": f"The report turned to one matter: {t}. {FILLER}" for i, t in enumerate(TOPICS)}
    queries = {f"q{i}": f"What happened: {t}?" for i, t in enumerate(TOPICS)}
    return EvalSet(queries, corpus, {f"q{i}": [f"p{i}"] for i in range(len(TOPICS))})


def _projected(seconds: dict[int, float], budget: float, asked: list[int]):
    """A stand-in for trainer.training_cost: `seconds` of planned training at each window, against `budget`."""

    def cost(window: int) -> dict:
        asked.append(window)
        return {"window": window, "budget_s": budget, "training_s_estimate": seconds[window], "fits": seconds[window] <= budget}

    return cost


def test_a_tied_window_whose_training_does_not_fit_gives_way_to_a_shorter_one_that_does():
    from runner.infra.choosing import choose
    from runner.infra.priors import NEGATIVE_WORTH
    from runner.stages.evaluate.seq_length import affordable, negatives_lost

    rng = np.random.default_rng(0)
    tie = rng.uniform(0, 1, 200)
    table = [tie, tie + rng.normal(0, 0.05, 200), tie + rng.normal(0, 0.05, 200)]  # 256 / 384 / 512 inseparable
    asked = []
    default, why, costs = affordable([256, 384, 512], table, _projected({256: 500, 384: 1100, 512: 1700}, 900, asked))
    assert default == 0 and asked == [512, 384, 256] and [c["fits"] for c in costs] == [False, False, True]
    assert "256 projects 500 s of 900 s, 512 1700 s" in why
    lost = negatives_lost([256, 384, 512], default)
    assert choose([256, 384, 512], table, default, metric="ndcg@10", evidence="", why_default=why, offsets=lost)["chosen"] == 256
    # the longest fits: one probe, the longest stays the default
    asked.clear()
    assert affordable([256, 384, 512], table, _projected({256: 100, 384: 200, 512: 300}, 900, asked))[0] == 2
    assert asked == [512]
    # none fits: the negatives go at any window, so the longest stays
    asked.clear()
    default, why, costs = affordable([256, 384, 512], table, _projected({256: 950, 384: 1100, 512: 1700}, 900, asked))
    assert default == 2 and asked == [512, 384, 256] and "no window's planned training fits" in why
    # the longest clearly better than every other: its cost could not move the choice, so nothing is probed
    asked.clear()
    clear = [tie - 0.2, tie - 0.1, tie]
    assert affordable([256, 384, 512], clear, _projected({256: 1, 384: 1, 512: 1e9}, 900, asked))[0] == 2
    assert asked == []
    # ... and a longer window that is clearly better than the affordable default still wins on evidence
    asked.clear()
    default, why, _ = affordable([256, 384, 512], [tie - 0.2, tie, tie], _projected({256: 1, 384: 1e9, 512: 1e9}, 900, asked))
    assert default == 0
    lost = negatives_lost([256, 384, 512], default)
    assert lost == [0.0, -NEGATIVE_WORTH, -NEGATIVE_WORTH]
    record = choose([256, 384, 512], [tie - 0.2, tie, tie], default, metric="m", evidence="", why_default=why, offsets=lost)
    assert record["chosen"] == 384 and record["vs_default"]["expected"] == pytest.approx(0.2 - NEGATIVE_WORTH)
    # a longer window only a little better than the affordable one is not worth the negatives it loses
    record = choose([256, 384], [tie, tie + 0.01], 0, metric="m", evidence="", why_default=why, offsets=[0.0, -NEGATIVE_WORTH])
    assert record["best"] == 384 and record["chosen"] == 256


def test_the_window_choice_records_what_training_would_cost(minilm):
    from runner.infra.models import load_model

    model = load_model(minilm, "cpu")
    asked = []
    cost = _projected({256: 400.0, 384: 1200.0}, 900.0, asked)
    record, encoded = choose_max_seq_length(model, "minilm", _tied_side(), "ndcg@10", 10, 16, "fp32", 1000, 0, "test", cost)
    by_length = {c["value"]: c for c in record["candidates"]}
    assert record["default"] == 256 == record["chosen"] == model.max_seq_length and asked == [384, 256]
    assert by_length[256]["training_s_estimate"] == 400.0 and by_length[384]["training_s_estimate"] == 1200.0
    assert [c["window"] for c in record["training_cost"]] == [384, 256]
    assert "default 256: the longest window whose planned training fits" in record["reason"]
    assert encoded[1].shape[0] == len(TOPICS)


def test_training_cost_probes_the_planned_training_at_a_window(tiny_model):
    from omegaconf import OmegaConf

    from runner.data.pairs import EmbeddingQAFinetuneDataset
    from runner.infra.models import load_model
    from runner.stages.finetune.schema import SentenceTransformersFinetune
    from runner.stages.finetune.trainer import training_cost

    base = {"name_or_path": str(tiny_model), "revision": None, "max_seq_length": None, "query_prompt": "",
            "passage_prompt": "", "trust_remote_code": False, "build": None}  # fmt: skip
    model = load_model(OmegaConf.create(base), "cpu")
    own = model.max_seq_length
    corpus = {f"p{i}": f"{t}. {FILLER}" for i, t in enumerate(TOPICS)}
    pairs = EmbeddingQAFinetuneDataset(
        queries={f"q{i}": f"What happened: {t}?" for i, t in enumerate(TOPICS)},
        corpus=corpus,
        relevant_docs={f"q{i}": [f"p{i}"] for i in range(20)},
    )
    settings = {**asdict(SentenceTransformersFinetune()), "batch_size": 4, "epochs": 2, "precision": "fp32", "seed": 0}
    settings["device"] = "cpu"
    settings["time_budget_s"] = 1e6
    roomy = training_cost(model, pairs, 64, negatives=1, settings=settings)
    assert model.max_seq_length == own and roomy["window"] == 64 and roomy["budget_s"] == 1e6 and roomy["fits"]
    assert roomy["seconds_per_plain_step"] > 0 and 1.5 < roomy["negatives_step_factor"] < 2.0  # short questions
    steps = 2 * 5  # 20 pairs at batch 4, two epochs
    planned = steps * roomy["seconds_per_plain_step"] * roomy["negatives_step_factor"] + roomy["mining_s_estimate"]
    assert roomy["training_s_estimate"] == pytest.approx(planned, abs=0.15)  # fields rounded: 0.1 s twice, 3 decimals
    settings["time_budget_s"] = roomy["training_s_estimate"] / 1000
    assert not training_cost(model, pairs, 64, negatives=1, settings=settings)["fits"]


def test_the_window_weighs_training_cost_only_where_a_budget_and_mined_negatives_are_planned(tiny_model, tmp_path):
    from runner.finetune_setup import window_cost

    def cost_of(*overrides):
        return window_cost(compose(fast(tiny_model, "logger=none", *overrides), tmp_path), "model", {"pairs": 1}, "cpu")

    assert cost_of() == (None, None)  # generated pairs: hard_negatives auto is 0
    assert cost_of("finetune.hard_negatives.num=1", "finetune.time_budget_s=null") == (None, None)
    assert cost_of("finetune=none") == (None, None)
    cost, key = cost_of("finetune.hard_negatives.num=1", "finetune.time_budget_s=600")
    assert cost.keywords["negatives"] == 1 and cost.keywords["settings"]["time_budget_s"] == 600
    assert key["negatives"] == 1 and key["time_budget_s"] == 600 and key["batch_size"] == cost.keywords["settings"]["batch_size"]
    # what decides the cost is in the choice's cache key; what does not (the learning rate) is not
    assert cost_of("finetune.hard_negatives.num=1", "finetune.time_budget_s=601")[1] != key
    assert cost_of("finetune.hard_negatives.num=1", "finetune.time_budget_s=600", "finetune.attention_dropout=null")[1] != key
    assert cost_of("finetune.hard_negatives.num=1", "finetune.time_budget_s=600", "finetune.learning_rate=1e-3")[1] == key


def test_the_trainer_decides_its_negatives_on_the_windows_own_measurement(tiny_model, tmp_path):
    """The window was chosen because its training fits with the negatives: the trainer reads that same
    measurement instead of probing again, so the two choices cannot contradict each other."""
    from runner.finetune_setup import finetune_overrides

    cfg = compose(fast(tiny_model, "logger=none"), tmp_path)
    choice = {
        "chosen": 256,
        "training_cost": [{"window": 384, "seconds_per_plain_step": 9.0}, {"window": 256, "seconds_per_plain_step": 4.4}],
    }
    assert finetune_overrides(cfg, window_choice=choice)["step_seconds"] == 4.4
    assert "step_seconds" not in finetune_overrides(cfg, window_choice={"chosen": 256})
    assert "step_seconds" not in finetune_overrides(cfg)
