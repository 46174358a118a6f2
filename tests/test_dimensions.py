"""loss=matryoshka: every trained width scored on the eval set against the full one, with a plot."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import compose, fast
from runner.pipeline import run
from wandb_records import run_contents


def test_a_matryoshka_model_is_scored_at_each_trained_width(tiny_model, tmp_path, caplog):
    import logging

    from omegaconf import OmegaConf
    from sentence_transformers import SentenceTransformer

    from runner.data.pairs import EmbeddingQAFinetuneDataset
    from runner.data.eval_set import EvalSet
    from runner.stages.evaluate.scoring import evaluate_model

    out = tmp_path / "run"
    caplog.set_level(logging.INFO, logger="ragtune")
    matryoshka = ("finetune.loss=matryoshka", "finetune.matryoshka_dims=[32,16]", "export=truncate", "export.truncate.dim=16")
    run(compose(fast(tiny_model, *matryoshka), out))  # W&B offline
    results = json.loads((out / "results.json").read_text())
    rows = results["dimensions"]
    assert list(rows) == ["64", "32", "16"]  # the full width (tiny BERT: 64) first
    assert rows["64"]["metrics"] == results["metrics"]["finetuned"] and "delta_ci95" not in rows["64"]
    assert [r["bytes_per_vector"] for r in rows.values()] == [256, 128, 64]
    assert rows["16"]["index_mb"] == pytest.approx(rows["64"]["index_mb"] / 4, rel=0.01)
    for d in ("32", "16"):
        low, high = rows[d]["delta_ci95"]
        assert low <= rows[d]["delta_vs_full"] <= high and 0 <= rows[d]["delta_p"] <= 1
        assert rows[d]["delta_vs_full"] == pytest.approx(rows[d]["metrics"]["ndcg@10"] - rows["64"]["metrics"]["ndcg@10"])
    # the cut of the kept embeddings is what sentence-transformers' own truncate_dim gives
    qa = EmbeddingQAFinetuneDataset.from_json(str(out / "eval_set.json"))
    cfg = OmegaConf.create(results["config"])
    model = SentenceTransformer(str(out / "model"), device="cpu", truncate_dim=16)
    direct = evaluate_model(model, EvalSet(qa.queries, qa.corpus, qa.relevant_docs), cfg.evaluate, 64)
    assert np.isclose(direct.metrics["ndcg@10"], rows["16"]["metrics"]["ndcg@10"], atol=1e-6)
    assert (out / "dimensions.png").stat().st_size > 1000
    (run_file,) = out.glob("wandb/offline-run-*/run-*.wandb")
    summary = run_contents(run_file)["summary"]
    assert summary["dimensions/16/ndcg@10"] == pytest.approx(rows["16"]["metrics"]["ndcg@10"])
    assert summary["dimensions/16/delta_ci95_low"] == pytest.approx(rows["16"]["delta_ci95"][0])
    table = next(r.getMessage() for r in caplog.records if "dimensions (Matryoshka truncation" in r.getMessage())
    assert f"{rows['16']['metrics']['ndcg@10']:.4f}" in table and f"{rows['16']['delta_vs_full']:+.4f}" in table

    # export=truncate saves the width with the model: the same score, and LlamaIndex gets 16 numbers
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    row = results["exports"]["truncate"]
    assert row["dim"] == 16 and row["metrics"]["ndcg@10"] == pytest.approx(rows["16"]["metrics"]["ndcg@10"], abs=1e-6)
    assert row["delta_vs_torch"] == pytest.approx(rows["16"]["delta_vs_full"], abs=1e-6)
    assert len(HuggingFaceEmbedding(model_name=row["path"], device="cpu").get_text_embedding("a passage")) == 16


def test_other_losses_have_no_dimension_table(tiny_model, tmp_path):
    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none"), out))
    assert json.loads((out / "results.json").read_text())["dimensions"] == {}
    assert not (out / "dimensions.png").exists()


def test_a_truncation_wider_than_the_model_is_a_row_error(tiny_model, tmp_path):
    from runner.infra.errors import RagtuneError

    with pytest.raises(RagtuneError, match=r"export.truncate.dim=128 is wider than the model's 64 dimensions: use 32 or less"):
        run(compose(fast(tiny_model, "logger=none", "export=truncate"), tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "results.json").read_text())["exports"]["truncate"]["error"]
