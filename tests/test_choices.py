"""How a run chooses: the shared rule (runner/infra/choosing.py), the evidence each choice is made on (every
training-side question before training, the dev split after), and that no choice reads the eval set."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose, fast
from runner.data.eval_set import EvalSet
from runner.data.pairs import EmbeddingQAFinetuneDataset
from runner.infra.choosing import choose, stability
from runner.stages.evaluate.eval_sets import training_side


def exact_stability(table: np.ndarray, winner: int, default: int) -> float:
    """The share of all n^n equally likely resamples of n questions in which `winner` still wins, ties to the
    default first and then in listed order: what the bootstrap estimates, worked out by enumeration."""
    n_cands, n = table.shape
    order = [default] + [i for i in range(n_cands) if i != default]
    wins = 0
    for draw in itertools.product(range(n), repeat=n):
        means = table[:, list(draw)].mean(axis=1)
        best = order[0]
        for i in order[1:]:
            if means[i] > means[best] + 1e-12:
                best = i
        wins += best == winner
    return wins / n**n


def test_stability_is_the_share_of_resamples_the_winner_still_wins():
    # three candidates on three questions; the default (A) wins its ties. B wins the full table (0.533 against
    # A's 0.5 and C's 0.4). A resample draws the questions (n1, n2, n3) times: B scores n1 + 0.6 n3, A n2 + 0.5 n3
    # (both / 3), C 0.4. B still wins in (3,0,0) 1/27, (0,0,3) 1/27, (2,1,0) 3/27, (2,0,1) 3/27, (1,0,2) 3/27 and
    # (1,1,1) 6/27 (1.6 against 1.5); it loses (0,3,0), (1,2,0), (0,2,1), (0,1,2). So 17/27.
    table = np.array([[0.0, 1.0, 0.5], [1.0, 0.0, 0.6], [0.4, 0.4, 0.4]])
    exact = exact_stability(table, winner=1, default=0)
    assert exact == pytest.approx(17 / 27)
    assert stability(table, 1, 0, n_resamples=20000, seed=0) == pytest.approx(exact, abs=0.015)
    assert stability(table, 0, 0, n_resamples=20000, seed=0) == pytest.approx(exact_stability(table, 0, 0), abs=0.015)
    assert stability(table[:1], 0, 0) == 1.0  # one candidate always wins


def test_a_tie_falls_to_the_written_default():
    same = np.array([1.0, 0.0, 1.0, 0.0, 1.0])
    record = choose(["a", "b", "c"], [same, same, same * 0.5], 1, metric="ndcg@10", evidence="test", why_default="the prior")
    assert record["chosen"] == "b" and record["best"] == "b" and record["decided_by"] == "evidence"
    assert record["margin"] == 0.0 and record["questions"] == 5 and "the default scores best" in record["reason"]
    # with a prior that ties too: still the default
    record = choose(["a", "b"], [same, same], 1, metric="m", evidence="t", why_default="w", priors=[(0.0, 0.01), None])
    assert record["chosen"] == "b" and record["decided_by"] == "both"


def _split(n: int, mean: float, spread: float) -> np.ndarray:
    """Per-question differences of exactly `mean`, half of them `spread` above it and half below."""
    return mean + spread * np.where(np.arange(n) % 2 == 0, 1.0, -1.0)


def _default_and_candidate(n: int, mean: float, spread: float, prior) -> tuple[np.ndarray, dict]:
    """(the default's scores, the record) of a candidate `mean` better on `n` questions (`_split`), with `prior`."""
    default = np.linspace(0.2, 0.8, n)
    table = [default, default + _split(n, mean, spread)]
    return default, choose(
        ["default", "candidate"], table, 0, metric="ndcg@10", evidence="test", why_default="w", priors=[None, prior]
    )


def test_many_questions_outweigh_a_weak_prior():
    # 600 questions favour the candidate by 0.01 (each question +0.16 or -0.14); the benchmarks put it 0.005 below
    # the default, give or take 0.02. By hand: se = 0.15 / sqrt(599) = 0.0061288 (sd with ddof 1 is
    # 0.15 sqrt(600/599), over sqrt(600)); w = 0.02^2 / (0.02^2 + se^2) = 0.0004 / 0.00043756 = 0.91415;
    # expected = 0.91415 x 0.01 + 0.08585 x (-0.005) = +0.0087123
    default, record = _default_and_candidate(600, 0.01, 0.15, prior=(-0.005, 0.02))
    assert record["chosen"] == "candidate" and record["decided_by"] == "evidence" and record["prior_best"] == "default"
    se = 0.15 / np.sqrt(599)
    w = 0.02**2 / (0.02**2 + se**2)
    assert se == pytest.approx(0.0061288, abs=1e-7) and w == pytest.approx(0.91415, abs=1e-5)
    assert (
        record["vs_default"]["expected"]
        == pytest.approx(0.0087123, abs=5e-6)
        == pytest.approx(w * 0.01 - (1 - w) * 0.005, abs=5e-6)
    )
    assert record["vs_default"]["weight"] == pytest.approx(w, abs=1e-4) and record["vs_default"]["delta"] == pytest.approx(0.01)
    assert record["candidates"][1]["expected"] == pytest.approx(default.mean() + 0.0087123, abs=1e-5)
    assert record["candidates"][1]["prior_shift"] == pytest.approx(0.0087123 - 0.01, abs=1e-5)
    assert record["candidates"][1]["prior"] == {"mean": -0.005, "sd": 0.02}
    assert record["vs_default"]["ci95"][0] < 0  # the old rule (an interval above 0) would have kept the default


def test_a_strong_prior_outweighs_a_few_questions():
    # the same +0.01 on 60 questions, against benchmarks that agree the candidate is 0.005 worse (spread 0.002).
    # By hand: se = 0.1 / sqrt(59) = 0.0130189; w = 0.002^2 / (0.002^2 + se^2) = 0.000004 / 0.00017349 = 0.023056;
    # expected = 0.023056 x 0.01 + 0.976944 x (-0.005) = -0.0046541: the default stays
    default, record = _default_and_candidate(60, 0.01, 0.1, prior=(-0.005, 0.002))
    assert record["best"] == "candidate" and record["chosen"] == "default" and record["decided_by"] == "prior"
    assert record["vs_default"]["expected"] == pytest.approx(-0.0046541, abs=5e-6)
    assert record["vs_default"]["weight"] == pytest.approx(0.023056, abs=1e-4)
    assert "the default; the best on the evidence, candidate" in record["reason"]
    # without the prior the evidence alone decides, and the candidate wins
    assert _default_and_candidate(60, 0.01, 0.1, prior=None)[1]["chosen"] == "candidate"


def test_the_combination_can_pick_a_candidate_neither_side_ranks_first():
    # the evidence ranks b first (+0.012), the prior ranks a first (+0.002, strongly); c is middling on both
    base = np.linspace(0.2, 0.8, 400)
    table = [base, base + _split(400, 0.0, 0.05), base + _split(400, 0.012, 0.3), base + _split(400, 0.008, 0.05)]
    priors = [None, (0.002, 0.001), (-0.01, 0.003), (0.001, 0.01)]
    record = choose(["d", "a", "b", "c"], table, 0, metric="m", evidence="t", why_default="w", priors=priors)
    assert record["best"] == "b" and record["prior_best"] == "a" and record["chosen"] == "c" and record["decided_by"] == "both"
    assert record["chosen_vs_default"]["delta"] == pytest.approx(0.008)


def test_stability_counts_the_resamples_in_which_the_rule_picks_the_same():
    # without priors the rule is the argmax, as before; a prior that forbids the candidate makes the default win them all
    rng = np.random.default_rng(0)
    base = rng.random(300)
    better = base + rng.normal(0.02, 0.05, 300)
    assert stability(np.array([base, better]), 1, 0, seed=0) > 0.95
    assert stability(np.array([base, better]), 0, 0, priors=[None, (-0.5, 1e-6)], seed=0) == 1.0
    # a known cost larger than the gain (a window that loses the mined negative) does the same
    assert stability(np.array([base, better]), 0, 0, offsets=[0.0, -0.1], seed=0) == 1.0


def test_priors_are_rebased_on_the_runs_default_and_missing_candidates_get_none():
    from runner.infra.priors import key, priors_for

    table = {"-256": [-0.02, 0.01], "-128": [-0.005, 0.004], "+0": [0.0, 0.0]}
    assert [key("max_seq_length", [256, 384, 512], i, 2) for i in range(3)] == ["-256", "-128", "+0"]
    assert priors_for("max_seq_length", [256, 384, 512], 2, table) == [(-0.02, 0.01), (-0.005, 0.004), None]
    # a default of 384 (the longest that fits the budget): 256 and 512 against it
    rebased = priors_for("max_seq_length", [256, 384, 512], 1, table)
    assert rebased[0] == pytest.approx((-0.015, np.hypot(0.01, 0.004))) and rebased[1] is None
    assert rebased[2] == pytest.approx((0.005, 0.004))
    fusions = [{"mode": "relative_score", "top_k": 50, "dense_weight": w} for w in (0.3, 0.4, 0.5)]
    assert [key("fusion_hybrid_finetuned", fusions, i, 1) for i in range(3)] == ["w-0.1", "w+0.0", "w+0.1"]
    assert priors_for("bm25", [{"stopwords": True, "stemming": True}, {"stopwords": True, "stemming": False}], 0, {}) == [
        None,
        None,
    ]
    assert [key("epochs", [1.0, 2.0, 3.0], i, 2) for i in range(3)] == ["-2 of 3", "-1 of 3", "+0 of 3"]


# Stemming finds "foxes" in a passage about a "fox"; it also merges "universe" with "university".
TRAIN = [
    ("foxes", "fox"),
    ("running", "runs"),
    ("connected", "connection"),
    ("apples", "apple"),
    ("jumping", "jumped"),
    ("painting", "painted"),
    ("walking", "walked"),
    ("cooking", "cooked"),
    ("playing", "played"),
    ("dreaming", "dreamed"),
    ("singing", "sings"),
    ("climbing", "climbed"),
]
DEV = [("universe", "university"), ("organ", "organization"), ("author", "authority"), ("experience", "experiment")]


def _sides():
    """Training pairs that stemming answers, and a dev split (with distractors) that stemming gets wrong."""
    pairs = EmbeddingQAFinetuneDataset(
        queries={f"t{i}": f"tell me about {q}" for i, (q, _) in enumerate(TRAIN)},
        corpus={f"tp{i}": f"a short note on {p} here" for i, (_, p) in enumerate(TRAIN)},
        relevant_docs={f"t{i}": [f"tp{i}"] for i in range(len(TRAIN))},
    )
    corpus = {}
    for i, (word, clash) in enumerate(DEV):
        corpus[f"dp{i}"] = f"the {word} is described once here"
        corpus[f"dx{i}"] = f"{clash} {clash} {clash} listed again"  # stems like the question's word
    dev = EvalSet(
        {f"d{i}": f"what about the {w}" for i, (w, _) in enumerate(DEV)}, corpus, {f"d{i}": [f"dp{i}"] for i in range(len(DEV))}
    )
    return pairs, dev


def test_choices_before_training_take_the_training_sides_winner_over_the_dev_splits(tiny_model, tmp_path, monkeypatch):
    from runner.infra.models import load_model
    from runner.stages.evaluate import before_training
    from runner.stages.evaluate.choices import choose_bm25
    from runner.stages.evaluate.baselines import bm25_grid

    cfg = compose(fast(tiny_model, "logger=none"), tmp_path)
    baselines = OmegaConf.merge(cfg.evaluate.baselines, {"stopwords": True, "k1": [1.5], "b": [0.75]})
    pairs, dev = _sides()
    grid = bm25_grid("english", True, None)
    # the dev split alone prefers no stemming; make that the written default, so only evidence can move it
    prior = {"stopwords": True, "stemming": False}
    monkeypatch.setattr(before_training, "BM25_PRIOR", prior)
    monkeypatch.setattr("runner.infra.priors.PRIORS", {})  # no benchmark prior: the evidence alone decides
    _, on_dev = choose_bm25(dev, grid, prior, {"metric": "ndcg@10", "n_resamples": 2000, "seed": 0, "evidence": "dev"})
    by = {c["value"]["stemming"]: c["score"] for c in on_dev["candidates"]}
    assert by[False] > by[True] + 0.2 and on_dev["chosen"]["stemming"] is False

    model = load_model(OmegaConf.create({**OmegaConf.to_container(cfg.base_model), "name_or_path": str(tiny_model)}), "cpu")
    side = training_side(pairs, dev)
    assert len(side.answered_query_ids()) == len(TRAIN) + len(DEV) and set(dev.corpus) <= set(side.corpus)
    decided = before_training.choose_before_training(
        model, "tiny", side, dev, window=False, baselines=baselines, metric="ndcg@10", k=10, batch_size=8, precision="fp32",
        n_resamples=2000, seed=0,
    )  # fmt: skip
    record = decided.records["bm25"]
    assert record["questions"] == len(TRAIN) + len(DEV) and "12 training-pair and 4 dev questions" in record["evidence"]
    assert decided.bm25.stemming is True and record["decided_by"] == "evidence" and record["vs_default"]["ci95"][0] > 0
    assert decided.records["fusion_hybrid_base"]["questions"] == 16 and decided.fusion is not None
    assert decided.base_dev_scores.shape == (len(DEV),)  # the dev split's part of the one encoding


def test_training_side_keeps_dev_ids_and_renames_a_clashing_training_id():
    pairs = EmbeddingQAFinetuneDataset(
        queries={"q1": "a", "q2": "b"}, corpus={"p1": "same text", "p2": "train text"}, relevant_docs={"q1": ["p1"], "q2": ["p2"]}
    )
    dev = EvalSet({"q1": "dev a", "q3": "no answer"}, {"p1": "same text", "p2": "dev text"}, {"q1": ["p2"], "q3": []})
    side = training_side(pairs, dev)
    assert side.queries == {"q1": "dev a", "train:q1": "a", "q2": "b"}
    assert side.corpus == {"p1": "same text", "p2": "dev text", "train:p2": "train text"}
    assert side.relevant_docs == {"q1": ["p2"], "train:q1": ["p1"], "q2": ["train:p2"]}
    assert training_side(None, None) is None and training_side(pairs, None).queries == pairs.queries


def test_choices_after_training_see_only_dev_questions_and_none_reads_the_eval_set(tiny_model, tmp_path, monkeypatch):
    """Every question a choice scores is recorded: before training the training side's, after it (epochs,
    merge weight, the finetuned hybrid's weight) only the dev split's, and never one of the eval set's."""
    from runner.pipeline import run
    from runner.stages.evaluate import choices as choices_module
    from runner.stages.finetune import trainer

    scored: list[tuple[str, set]] = []
    phase = ["before"]
    original_per_query, original_train = choices_module.per_query, trainer.run_trainer

    def spy_per_query(ranked, eval_set, query_ids, metric):
        scored.append((phase[0], set(query_ids)))
        return original_per_query(ranked, eval_set, query_ids, metric)

    def spy_train(*args, **kwargs):
        phase[0] = "after"
        return original_train(*args, **kwargs)

    from runner.stages.evaluate import scoring, seq_length

    for module in (choices_module, scoring, seq_length):  # every module that scores a choice's questions
        monkeypatch.setattr(module, "per_query", spy_per_query)
    monkeypatch.setattr(trainer, "run_trainer", spy_train)
    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none", "finetune.max_steps=-1", "finetune.epochs=2", "finetune.best_epoch=true"), out))
    results = json.loads((out / "results.json").read_text())
    train_q = set(json.loads((out / "train_pairs.json").read_text())["queries"])
    dev_q = set(json.loads((out / "dev_set.json").read_text())["queries"])
    eval_q = set(json.loads((out / "eval_set.json").read_text())["queries"])
    before = set().union(*(q for p, q in scored if p == "before"))
    after = [q for p, q in scored if p == "after"]
    assert before == train_q | dev_q and after and all(q <= dev_q for q in after)
    assert not any(q & eval_q for _, q in scored) and not (eval_q & (train_q | dev_q))
    choices = results["choices"]
    n_dev, n_side = results["counts"]["dev_queries"], results["counts"]["dev_queries"] + len(train_q)
    for name in ("bm25", "bm25_params", "fusion_hybrid_base"):
        assert choices[name]["questions"] == n_side, name
    for name in ("epochs", "merge", "fusion_hybrid_finetuned"):
        assert choices[name]["questions"] == n_dev and "dev split" in choices[name]["evidence"], name
    for record in (choices[n] for n in ("bm25", "merge", "epochs")):
        assert 0 <= record["stability"] <= 1 and record["decided_by"] in ("evidence", "prior", "both") and "margin_ci95" in record


def test_the_console_table_shows_each_choice_with_its_evidence():
    from runner.report.results import choices_table

    rng = np.random.default_rng(3)
    base = rng.random(300)
    choices = {
        "window": choose([256, 512], [base, base + 0.05], 1, metric="ndcg@10", evidence="t", why_default="p"),
        "bm25": choose(
            [{"stopwords": True, "stemming": True}, {"stopwords": True, "stemming": False}],
            [base, base + rng.normal(0.002, 0.2, 300)],
            0,
            metric="ndcg@10",
            evidence="t",
            why_default="p",
            priors=[None, (-0.02, 0.002)],  # the benchmarks agree: stemming is worth 0.02
        ),
        "one": {"candidates": [{"value": 256, "passages_cut": 0.0}], "chosen": 256, "questions": 0, "decided_by": "prior"},
        "time_budget": {"chosen": {"steps": 3}, "reason": "no decided_by: not a choice from data"},
    }
    table = choices_table(choices)
    rows = {
        line.split("│")[1].strip(): line for line in table.splitlines() if line.startswith("│") and line.split("│")[1].strip()
    }
    assert set(rows) == {"window", "bm25", "one"}
    assert "512" in rows["window"] and "evidence" in rows["window"] and "100%" in rows["window"] and "300" in rows["window"]
    assert "stemming True" in rows["bm25"] and "prior" in rows["bm25"] and "best: stopwords True, stemming False" in rows["bm25"]
    expected = choices["bm25"]["candidates"][0]["expected"]
    assert f"{expected:.4f}" in rows["bm25"] and expected == choices["bm25"]["candidates"][0]["score"]  # the default's own


def test_the_shipped_priors_cover_every_choice_against_its_written_default():
    """runner/infra/prior_table.py (bench/priors.py write): each choice the benchmarks measured has priors, its
    written default's own difference is 0 with no spread, every other spread is positive, the default's key is
    the one runs look up, and no prior rests on fewer than 4 benchmarks (the t spread's minimum)."""
    from runner.infra.prior_table import MEASURED, PRIORS
    from runner.infra.priors import key, priors_for
    from runner.stages.evaluate.schema import BM25_PARAMS_PRIOR, BM25_PRIOR, FUSION_PRIOR

    assert set(PRIORS) >= {"bm25", "bm25_params", "fusion_hybrid_base", "merge", "fusion_hybrid_finetuned"}
    assert MEASURED["date"] and MEASURED["commit"] and MEASURED["spread"] == "t"
    written = {
        "bm25": [BM25_PRIOR],
        "bm25_params": [{"language": "english", "stopwords": True, "stemming": True, **BM25_PARAMS_PRIOR}],
        "fusion_hybrid_base": [FUSION_PRIOR],
        "merge": [1.0],
        "fusion_hybrid_finetuned": [FUSION_PRIOR],
    }
    for choice, values in written.items():
        own = key(choice, values, 0, 0)
        assert PRIORS[choice][own] == [0.0, 0.0], choice
        others = {k: v for k, v in PRIORS[choice].items() if k != own}
        assert others and all(sd > 0 for _, sd in others.values()), choice
        assert MEASURED[choice]["benchmarks"] >= 4, choice
    # a run's candidates find their priors: BM25 without stemming, against the written tokenisation
    grid = [BM25_PRIOR, {"stopwords": True, "stemming": False}]
    (_, (mean, sd)) = priors_for("bm25", grid, 0)
    assert (mean, sd) == tuple(PRIORS["bm25"]["stopwords=True stemming=False"])


def test_evaluating_the_base_model_on_a_file_chooses_on_no_other_corpus(tiny_model, tmp_path):
    """finetune=none eval_set=file once carved its dev split from the built-in Python reference and chose BM25,
    the fusion and the window on it for the user's corpus: the choices fall to their written defaults."""
    from runner.pipeline import run

    animals = ("fox", "owl", "eel", "bee")
    evals = {
        "queries": {f"q{i}": f"Where does the {w} live?" for i, w in enumerate(animals)},
        "corpus": {f"d{i}": f"The {w} lives near the river and hunts at night." for i, w in enumerate(animals)},
        "relevant_docs": {f"q{i}": [f"d{i}"] for i in range(4)},
        "mode": "text",
    }
    path = tmp_path / "VAL.json"
    path.write_text(json.dumps(evals))
    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none", "finetune=none", "eval_set=file", f"eval_set.path={path}"), out))
    results = json.loads((out / "results.json").read_text())
    assert "dev_queries" not in results["counts"] and not (out / "dev_set.json").exists()
    assert "load" not in results["cache"] and "split" not in results["cache"]  # the corpus was never read
    for name in ("bm25", "fusion_hybrid_base"):
        record = results["choices"][name]
        assert record["questions"] == 0 and record["decided_by"] == "prior" and "written default" in record["reason"], name
