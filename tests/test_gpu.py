"""On a CUDA GPU only (scripts/gpu_check.sh runs these): device and precision resolution, a bf16
run end to end, bf16 encoding close to fp32, and the finetuned model's weights on the GPU."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

from conftest import compose, fast  # noqa: E402
from runner.infra.models import resolve_device, resolve_precision  # noqa: E402
from runner.pipeline import run  # noqa: E402


def test_auto_picks_cuda_and_bf16_where_the_gpu_has_it():
    assert resolve_device("auto") == "cuda"
    assert resolve_device(f"cuda:{torch.cuda.device_count() - 1}").startswith("cuda")
    assert resolve_precision("auto", "cuda") == ("bf16" if torch.cuda.is_bf16_supported() else "fp32")
    assert resolve_precision("fp16", "cuda") == "fp16"


def test_a_bf16_run_on_cuda_trains_evaluates_and_reports_gpu_memory(tiny_model, tmp_path):
    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none", "device=cuda", "precision=bf16", "finetune.dataloader_num_workers=2"), out))
    results = json.loads((out / "results.json").read_text())
    assert results["device"] == "cuda" and results["precision"] == "bf16"
    assert results["gpu"]["peak_memory_gib"] > 0 and results["throughput"]["train_pairs_per_s"] > 0
    assert results["metrics"]["finetuned"]["ndcg@10"] > 0


def test_bf16_encoding_is_close_to_fp32(tiny_model):
    from sentence_transformers import SentenceTransformer

    from runner.stages.evaluate.scoring import encode

    model = SentenceTransformer(str(tiny_model), device="cuda")
    texts = [f"passage {i} about retrieval, embeddings and finetuning" for i in range(64)]
    full = encode(model, texts, "document", 16, "fp32")
    half = encode(model, texts, "document", 16, "bf16")
    assert full.device.type == "cuda" and (full * half).sum(-1).min() > 0.99


def test_torch_compile_flag_trains(tiny_model, tmp_path):
    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none", "device=cuda", "finetune.torch_compile=true"), out))
    assert json.loads((out / "results.json").read_text())["config"]["finetune"]["torch_compile"] is True
