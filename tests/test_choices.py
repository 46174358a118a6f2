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
    assert record["chosen"] == "b" and record["best"] == "b" and record["decided_by"] == "default"
    assert record["margin"] == 0.0 and record["questions"] == 5 and "not clearly" in record["reason"]


def test_the_best_replaces_the_default_only_when_clearly_better():
    rng = np.random.default_rng(0)
    base = rng.random(400)
    hair = base + rng.normal(0.002, 0.05, 400)  # a hair better on average, in the noise
    clear = base + 0.05  # better on every question
    record = choose([256, 512], [base, hair], 0, metric="ndcg@10", evidence="test", why_default="the prior", seed=1)
    assert hair.mean() > base.mean() and record["best"] == 512
    assert record["chosen"] == 256 and record["decided_by"] == "default" and record["vs_default"]["ci95"][0] <= 0
    record = choose([256, 512], [base, clear], 0, metric="ndcg@10", evidence="test", why_default="the prior", seed=1)
    assert record["chosen"] == 512 and record["decided_by"] == "evidence" and record["vs_default"]["ci95"][0] > 0
    assert record["margin"] == pytest.approx(0.05, abs=1e-5) and record["runner_up"] == 256 and record["stability"] == 1.0
    # the default that wins clearly was decided by the evidence; every candidate's score is recorded
    record = choose([256, 512], [clear, base], 0, metric="ndcg@10", evidence="test", why_default="the prior")
    assert record["chosen"] == 256 and record["decided_by"] == "evidence"
    assert [c["value"] for c in record["candidates"]] == [256, 512] and record["candidates"][0]["score"] == round(clear.mean(), 5)


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
        assert 0 <= record["stability"] <= 1 and record["decided_by"] in ("evidence", "default") and "margin_ci95" in record


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
        ),
        "one": {"candidates": [{"value": 256, "passages_cut": 0.0}], "chosen": 256, "questions": 0, "decided_by": "default"},
        "time_budget": {"chosen": {"steps": 3}, "reason": "no decided_by: not a choice from data"},
    }
    table = choices_table(choices)
    rows = {
        line.split("│")[1].strip(): line for line in table.splitlines() if line.startswith("│") and line.split("│")[1].strip()
    }
    assert set(rows) == {"window", "bm25", "one"}
    assert "512" in rows["window"] and "evidence" in rows["window"] and "100%" in rows["window"] and "300" in rows["window"]
    assert (
        "stemming True" in rows["bm25"] and "default" in rows["bm25"] and "best: stopwords True, stemming False" in rows["bm25"]
    )
