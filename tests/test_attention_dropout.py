"""`finetune.attention_dropout`: off while training on a CPU (the fused attention kernel), the model's own after."""

from __future__ import annotations

import pytest

from conftest import finetune_settings


def test_the_setting_is_resolved_and_checked():
    from runner.stages.finetune.attention import check, resolve

    assert resolve("auto", "cpu") == 0.0 and resolve("auto", "cuda") is None and resolve(None, "cpu") is None
    assert resolve(0.05, "cuda") == 0.05
    assert check("auto") == check(None) == check(0.0) == check(0.1) == []
    assert "finetune.attention_dropout=1.5 is not a dropout rate" in check(1.5)[0] and "auto" in check("x")[0]


def test_training_runs_without_attention_dropout_and_leaves_the_models_own(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    from runner.data.pairs import EmbeddingQAFinetuneDataset
    from runner.stages.finetune import attention, trainer

    model = SentenceTransformer(str(tiny_model), device="cpu")
    layers = attention.attention_dropouts(model)
    assert layers and {layer.p for layer in layers} == {0.1}  # BERT's own, on the attention probabilities only
    seen = []
    original = trainer.run_trainer

    def spy(*args, **kwargs):
        seen.append({layer.p for layer in attention.attention_dropouts(model)})
        return original(*args, **kwargs)

    pairs = EmbeddingQAFinetuneDataset(
        queries={f"q{i}": f"query {i}" for i in range(8)},
        corpus={f"d{i}": f"passage number {i}" for i in range(8)},
        relevant_docs={f"q{i}": [f"d{i}"] for i in range(8)},
    )
    report = {}
    trainer.run_trainer = spy
    try:
        trainer.train_sentence_transformers(
            model, pairs, tmp_path, **finetune_settings(tmp_path, batch_size=4, max_steps=1, precision="fp32"), report=report
        )
    finally:
        trainer.run_trainer = original
    assert seen == [{0.0}] and {layer.p for layer in layers} == {0.1}
    assert report["attention_dropout"] == {
        "setting": "auto",
        "chosen": 0.0,
        "model_own": pytest.approx(0.1),
        "reason": "0 on a CPU: the fused attention kernel runs only without it",
    }
