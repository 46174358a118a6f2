"""finetune.time_budget_s and finetune.best_epoch: the clock fits the steps into the budget, mined
negatives go first, a budget without room for one epoch stops with a message, an earlier epoch is kept
only when clearly better on dev."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from runner.stages.finetune import budget
from runner.infra.errors import RagtuneError
from conftest import fast, finetune_settings, run_cli


def linear_scheduler(total: int, warmup: int):
    import torch
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    return get_linear_schedule_with_warmup(optimizer, warmup, total)


def drive(clock, times: list[float], max_steps: int, scheduler=None):
    """Step ends at `times` (seconds after the stage started at 0), through the clock's callback."""
    state = SimpleNamespace(global_step=0, max_steps=max_steps)
    control = SimpleNamespace(should_training_stop=False)
    for t in times:
        state.global_step += 1
        budget.time.perf_counter = lambda t=t: t
        clock.step_end(state, control, scheduler)
    return state, control


@pytest.fixture
def frozen_clock(monkeypatch):
    import time as real

    monkeypatch.setattr(budget, "time", SimpleNamespace(perf_counter=real.perf_counter))


def test_the_clock_fits_the_steps_into_the_budget_and_retargets_the_schedule(frozen_clock):
    record = {}
    scheduler = linear_scheduler(total=20, warmup=2)
    clock = budget.Clock(10.0, 0.0, steps_per_epoch=8, record=record, warmup_ratio=0.1)
    # one second a step: 20 planned steps end at 20 s; at step 3 (3 s spent) 7 more fit
    state, control = drive(clock, [1.0, 2.0, 3.0], max_steps=20, scheduler=scheduler)
    assert state.max_steps == 10 and record["seconds_per_step"] == 1.0 and record["projected_s"] == 20.0
    assert record["gave_up"] == ["steps 20 -> 10 (2.50 -> 1.25 epochs): 1.0 s a step measured over 2 steps"]
    assert not control.should_training_stop
    # the schedule now decays to 0 at step 10 (warm-up: ceil(0.1 x 10) = 1 step), not at step 20
    lam = scheduler.lr_lambdas[0]
    assert lam(10) == 0.0 and lam(5) == pytest.approx(5 / 9) and lam.keywords["num_warmup_steps"] == 1


def test_when_the_pace_picks_up_the_run_grows_back_toward_the_plan_but_never_past_it(frozen_clock):
    record = {}
    scheduler = linear_scheduler(total=20, warmup=2)
    clock = budget.Clock(14.0, 0.0, steps_per_epoch=4, record=record, warmup_ratio=0.1)
    # slow start (2 s a step): 3 + 4 steps fit; then 0.5 s steps pull the average down
    state, _ = drive(clock, [1.0, 3.0, 5.0], max_steps=20, scheduler=scheduler)
    assert state.max_steps == 7
    for t in (5.5, 6.0, 6.5, 7.0):
        state.global_step += 1
        budget.time.perf_counter = lambda t=t: t
        clock.step_end(state, SimpleNamespace(should_training_stop=False), scheduler)
    # at step 7: 7 s spent, 1.0 s a step on average: 7 more fit -> 14 steps
    assert state.max_steps == 14 and record["gave_up"] == [
        "steps 20 -> 14 (5.00 -> 3.50 epochs): 1.0 s a step measured over 6 steps"
    ]
    assert scheduler.lr_lambdas[0].keywords["num_training_steps"] == 14
    clock = budget.Clock(100.0, 0.0, steps_per_epoch=8, record={}, warmup_ratio=0.1)
    state, control = drive(clock, [1.0, 2.0, 3.0, 3.1, 3.2], max_steps=5)
    assert state.max_steps == 5 and not control.should_training_stop  # room to spare never adds steps
    assert "gave_up" not in clock.record


def test_a_run_that_fits_is_left_alone(frozen_clock):
    record = {}
    clock = budget.Clock(100.0, 0.0, steps_per_epoch=8, record=record, warmup_ratio=0.1)
    state, _ = drive(clock, [1.0, 2.0, 3.0, 4.0], max_steps=16)
    assert state.max_steps == 16 and "gave_up" not in record and record["projected_s"] == 16.0


def test_the_dev_scoring_still_owed_counts_against_the_budget(frozen_clock):
    record = {}
    clock = budget.Clock(20.0, 0.0, steps_per_epoch=8, record=record, warmup_ratio=0.1, epoch_evals=2)
    clock.eval_s = 2.0  # two epoch ends of 2 s each are owed: 4 s fewer for steps
    state, _ = drive(clock, [1.0, 2.0, 3.0], max_steps=16)
    assert state.max_steps == 16  # 3 s spent + 13 steps + 4 s owed = 20 s: it fits
    clock = budget.Clock(18.0, 0.0, steps_per_epoch=8, record={}, warmup_ratio=0.1, epoch_evals=2)
    clock.eval_s = 2.0
    state, _ = drive(clock, [1.0, 2.0, 3.0], max_steps=16)
    assert state.max_steps == 3 + int((18 - 3 - 4) // 1.0) == 14


def test_a_budget_that_cannot_fit_one_epoch_says_what_would(frozen_clock):
    clock = budget.Clock(5.0, 0.0, steps_per_epoch=8, record={}, warmup_ratio=0.1)
    with pytest.raises(RagtuneError) as err:
        drive(clock, [1.0, 2.0, 3.0], max_steps=16)
    text = str(err.value)
    assert "finetune.time_budget_s=5 cannot fit one epoch" in text and "3 s are spent" in text and "8 steps of 1 s = 8 s" in text
    assert "finetune.time_budget_s=11 or more" in text and "null for no budget" in text


def test_mined_negatives_go_first_when_they_would_break_the_budget(frozen_clock):
    budget.time.perf_counter = lambda: 0.0
    kw = dict(steps=20, steps_per_epoch=10, query_tokens=20.0, passage_tokens=200.0, texts_to_mine=640, batch_size=32)
    # a plain step 1 s; with one negative (20 + 400) / 220 = 1.91 s; mining 640 / 64 / 3 = 3.3 s
    record = {}
    assert budget.fit_negatives(1, 60.0, 0.0, lambda: 1.0, record, **kw) == 1 and "gave_up" not in record
    assert record["probe"]["negatives_step_factor"] == pytest.approx(420 / 220, abs=1e-3)
    record = {}
    assert budget.fit_negatives(1, 30.0, 0.0, lambda: 1.0, record, **kw) == 0
    assert record["gave_up"][0].startswith("hard negatives 1 -> 0") and "without them 20 s" in record["gave_up"][0]
    record = {}  # a probe that could not time two steps (too few rows) leaves the plan as it was
    assert budget.fit_negatives(1, 30.0, 0.0, lambda: float("nan"), record, **kw) == 1 and "gave_up" not in record
    probes = []
    assert budget.fit_negatives(1, None, 0.0, lambda: probes.append(1) or 1.0, {}, **kw) == 1 and not probes


def test_budget_settings_are_checked():
    assert budget.check("auto") == [] and budget.check(None) == [] and budget.check(600) == []
    assert "finetune.time_budget_s=-5" in budget.check(-5)[0] and budget.check("soon")
    assert budget.resolve_budget("auto", "cpu") == 900 and budget.resolve_budget("auto", "cuda:0") == 3600
    assert budget.resolve_budget(None, "cpu") is None and budget.resolve_budget(120, "cpu") == 120.0


def test_an_earlier_epoch_is_kept_only_when_clearly_better_on_dev():
    import torch

    from runner.stages.finetune.epochs import BestEpoch, wanted

    model = torch.nn.Linear(2, 1)
    strong, weak = np.ones(40), np.r_[np.ones(10), np.zeros(30)]
    for earlier, last, kept in ((strong, weak, 1), (weak, weak + 0.01 * (np.arange(40) % 2), 2)):
        scores = iter([earlier, last])
        picker = BestEpoch(model, lambda m: (f"ranking {len(picker.epochs) + 1}", next(scores)), "ndcg@10", 1000, 0)
        with torch.no_grad():
            model.weight.fill_(1.0)
        picker.epoch_end(SimpleNamespace(epoch=1.0, global_step=5, max_steps=10))
        with torch.no_grad():
            model.weight.fill_(2.0)
        # the last epoch ended a step short of the trainer's count (the no-duplicates sampler ran out):
        # still the last one scored, so still the default
        picker.epoch_end(SimpleNamespace(epoch=2.0, global_step=9, max_steps=10))
        record, ranking = picker.finish()
        assert record["chosen"] == kept and ranking == f"ranking {kept}"
        assert float(model.weight[0, 0].detach()) == float(kept) and set(record["dev"]) == {"1", "2"}
    # three epochs, the last the best: the best earlier one (epoch 1, whose weights were kept) is the candidate
    scores = iter([np.full(40, 0.6), np.full(40, 0.5), np.full(40, 0.7)])
    picker = BestEpoch(model, lambda m: ("r", next(scores)), "ndcg@10", 1000, 0)
    for epoch in (1, 2, 3):
        with torch.no_grad():
            model.weight.fill_(float(epoch))
        picker.epoch_end(SimpleNamespace(epoch=float(epoch), global_step=5 * epoch, max_steps=15))
    record, _ = picker.finish()
    assert record["chosen"] == 3 and record["runner_up"] == 1 and record["margin"] == 0.1 and record["stability"] == 1.0
    assert float(model.weight[0, 0].detach()) == 3.0 and record["questions"] == 40 and record["default"] == 3
    assert wanted(None, dev_texts=50, epoch_texts=200, steps=20, steps_per_epoch=10)
    assert not wanted(None, dev_texts=150, epoch_texts=200, steps=20, steps_per_epoch=10)  # scoring costs too much
    assert not wanted(None, dev_texts=50, epoch_texts=200, steps=10, steps_per_epoch=10)  # one epoch: no choice
    assert wanted(True, 150, 200, 10, 10) and not wanted(False, 50, 200, 20, 10)


def test_a_run_whose_budget_cannot_fit_an_epoch_stops_with_the_message_and_keeps_the_pairs(tiny_model, tmp_path):
    out = tmp_path / "run"
    args = fast(
        tiny_model,
        "logger=none",
        "finetune.max_steps=-1",
        "finetune.batch_size=2",
        "finetune.time_budget_s=0.05",
        f"hydra.run.dir={out}",
        f"paths.root={tmp_path}",
    )
    done = run_cli(*args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "finetune.time_budget_s=0.05 cannot fit one epoch" in done.stderr + done.stdout
    assert (out / "train_pairs.json").is_file() and not (out / "results.json").exists()
    pairs = json.loads((out / "train_pairs.json").read_text())
    assert len(pairs["queries"]) > 0


def test_with_negatives_planned_a_probe_times_plain_steps_on_a_copy_and_mining_follows(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from runner.stages.finetune.trainer import train_sentence_transformers
    from runner.data.pairs import EmbeddingQAFinetuneDataset

    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda omicron".split()
    corpus = {
        f"d{i}": f"{w} is the subject of passage {i}, " + " ".join(words[(i + j) % 12] for j in range(30))
        for i, w in enumerate(words * 2)
    }
    pairs = EmbeddingQAFinetuneDataset(
        queries={f"q{i}": f"what about {corpus[d].split()[0]} {i}?" for i, d in enumerate(corpus)},
        corpus=corpus,
        relevant_docs={f"q{i}": [d] for i, d in enumerate(corpus)},
    )
    model = SentenceTransformer(str(tiny_model), device="cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probed = {}
    original = budget.probe_step_seconds

    def spy(make_trainer, model_, rows, batch_size):
        probed["seconds"] = original(make_trainer, model_, rows, batch_size)
        probed["untouched"] = all((model_.state_dict()[k] == v).all() for k, v in before.items())
        return probed["seconds"]

    budget.probe_step_seconds = spy
    try:
        report = {}
        settings = finetune_settings(
            tmp_path,
            batch_size=4,
            epochs=1,
            precision="fp32",
            hard_negatives={"num": 1, "relative_margin": 0.0, "range_max": 10},
            time_budget_s=3600,
        )
        train_sentence_transformers(model, pairs, tmp_path, **settings, report=report)
    finally:
        budget.probe_step_seconds = original
    record = report["time_budget"]
    assert probed["untouched"] and probed["seconds"] > 0
    assert record["probe"]["seconds_per_plain_step"] == pytest.approx(probed["seconds"], abs=1e-3)
    assert record["hard_negatives"] == 1 and record["chosen"]["steps"] == record["planned"]["steps"]


def test_every_auto_is_recorded_with_its_setting_and_what_it_chose(tiny_model, tmp_path):
    from runner.pipeline import run
    from conftest import compose

    out = tmp_path / "run"
    run(
        compose(
            fast(
                tiny_model,
                "logger=none",
                "base_model.max_seq_length=auto",
                "chunker.chunk_size=400",
                "chunker.fit_window=false",
                "finetune.max_steps=-1",
                "finetune.epochs=auto",
            ),
            out,
        )
    )
    results = json.loads((out / "results.json").read_text())
    choices, config = results["choices"], results["config"]
    autos = {
        "max_seq_length": config["base_model"]["max_seq_length"],
        "chunk_size": config["chunker"]["chunk_size"],
        "time_budget": config["finetune"]["time_budget_s"],
        "epochs": config["finetune"]["best_epoch"],
        "hard_negatives": config["finetune"]["hard_negatives"]["num"],
        "batches": config["finetune"]["group_by_length"],
    }
    assert set(autos) <= set(choices), sorted(choices)
    assert autos["max_seq_length"] == "auto" and isinstance(choices["max_seq_length"]["chosen"], int)
    assert choices["time_budget"]["setting"] == "auto" and choices["time_budget"]["budget_s"] == 900.0
    plan = choices["epochs"]["plan"]
    from runner.stages.finetune.epochs import MAX_EPOCHS, TARGET_STEPS

    assert plan["setting"] == "auto" and plan["steps_per_epoch"] > 0
    assert plan["planned"] == min(MAX_EPOCHS, max(1, -(-TARGET_STEPS // plan["steps_per_epoch"])))
    assert choices["time_budget"]["chosen"]["epochs"] == plan["planned"] and choices["time_budget"]["reason"]
    assert choices["chunk_size"] == {"setting": 400, "chosen": 400, "unit": "tiktoken tokens"}  # fit_window=false
    assert choices["hard_negatives"] == {"setting": None, "chosen": 0, "reason": "pairs generated in the run: in-batch only"}
    assert choices["batches"]["setting"] is None and choices["batches"]["chosen"] in ("random", "length-grouped")
    assert choices["epochs"]["best_epoch"] is None and choices["epochs"]["reason"]
    for name in set(autos) - {"chunk_size"}:  # a number was given there: nothing to explain
        assert choices[name].get("reason"), name


def test_a_spent_budget_stops_training_at_once(frozen_clock):
    clock = budget.Clock(10.0, 0.0, steps_per_epoch=2, record={}, warmup_ratio=0.1)
    state, control = drive(clock, [1.0, 2.0, 3.0], max_steps=10)
    assert state.max_steps == 10 and not control.should_training_stop  # 3 s spent, 7 more steps fit
    clock = budget.Clock(10.0, 0.0, steps_per_epoch=2, record={}, warmup_ratio=0.1)
    state, control = drive(clock, [1.0, 2.0, 3.0, 12.0], max_steps=10)  # then a 9 s step: the budget is gone
    assert control.should_training_stop and state.max_steps == 4
    assert clock.record["gave_up"][0].startswith("steps 10 -> 4 (5.00 -> 2.00 epochs)")


def test_epochs_auto_plans_from_the_number_of_pairs():
    from runner.stages.finetune.epochs import planned

    assert [planned("auto", pairs, 32)[0] for pairs in (40, 188, 320, 321, 480, 506, 992, 993, 8000)] == [
        4,
        4,
        4,
        3,
        3,
        2,
        2,
        1,
        1,
    ]
    epochs, record = planned("auto", 506, 32)
    assert record == {"setting": "auto", "planned": 2.0, "pairs": 506, "steps_per_epoch": 16, "reason": record["reason"]}
    assert "506 pairs make 16 steps an epoch" in record["reason"]
    assert planned(3, 506, 32) == (3.0, {"setting": 3, "planned": 3.0})
