"""Finetune options on debug=fast data: losses, hard negatives, and their clear errors."""

from __future__ import annotations

import json
import logging

import pytest

from conftest import compose, fast
from runner.errors import RagtuneError
from runner.pipeline import run


@pytest.mark.parametrize("loss", [["finetune.loss=cached_mnrl", "finetune.mini_batch_size=2"],
                                  ["finetune.loss=matryoshka", "finetune.matryoshka_dims=[64,32]"]])
def test_losses_train_and_save_a_model(loss, tiny_model, tmp_path):
    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none", *loss), out))
    results = json.loads((out / "results.json").read_text())
    assert results["metrics"]["finetuned"] != results["metrics"]["base"]
    assert (out / "model" / "config_sentence_transformers.json").is_file()


def test_hard_negatives_are_mined_with_a_margin(tiny_model, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="ragtune"):
        run(compose(fast(tiny_model, "logger=none", "finetune.hard_negatives.num=1",
                         "finetune.hard_negatives.relative_margin=0.01"), out))
    assert "mined hard negative(s) each" in caplog.text
    assert json.loads((out / "results.json").read_text())["metrics"]["finetuned"]


def test_matryoshka_dims_larger_than_the_model_is_a_clear_error(tiny_model, tmp_path):
    with pytest.raises(RagtuneError, match=r"matryoshka_dims=\[384, 64\] must be .* at most the model's 64"):
        run(compose(fast(tiny_model, "logger=none", "finetune.loss=matryoshka", "finetune.matryoshka_dims=[384,64]"),
                    tmp_path / "run"))
