"""`export=...`: the trained model as ONNX, int8 ONNX and a static model, each loaded, scored paired
against the torch model, timed, cached, and usable in LlamaIndex."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, compose, fast, run_cli
from runner.infra.errors import RagtuneError
from runner.pipeline import run
from runner.report.results import exports_table
from wandb_records import run_contents

EXPORTS = "export=[onnx,onnx_int8,openvino,openvino_int8,static]"
TARGETS = ["onnx", "onnx_int8", "openvino", "openvino_int8", "static"]


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory):
    """One debug=fast run with every export, and a second run of the same config (the cache)."""
    root = tmp_path_factory.mktemp("export")
    run(compose(fast(tiny_model, EXPORTS), root / "a", root / "outputs"))  # W&B offline
    run(compose(fast(tiny_model, "logger=none", "export=[onnx_int8,openvino_int8,static]"), root / "b", root / "outputs"))
    return root


def test_every_export_is_scored_against_the_torch_model_timed_and_sized(exported):
    results = json.loads((exported / "a" / "results.json").read_text())
    rows = results["exports"]
    assert list(rows) == ["torch", *TARGETS]
    torch_row = rows["torch"]
    # the reference is the shipped model: the merge where one was kept and the verdict is not the finetuned row
    shipped = "merged" if "merged" in results["metrics"] and results["verdict"]["deploy"] != "finetuned" else "finetuned"
    assert torch_row["metrics"] == results["metrics"][shipped]
    assert torch_row["speedup_vs_torch"] == 1.0 and torch_row["texts_per_s"] > 0
    assert torch_row["query_speedup_vs_torch"] == 1.0 and torch_row["query_ms"] > 0
    # torch is timed before and after the exports: the ratios are against the mean of both
    for key, (first, last) in torch_row["timings"].items():
        assert first > 0 and last > 0 and torch_row[key] == pytest.approx((first + last) / 2, abs=0.01)
    assert set(torch_row["timings"]) == {"texts_per_s", "query_ms"}
    for name in TARGETS:
        row = rows[name]
        assert row["size_mb"] > 0 and row["texts_per_s"] > 0 and row["peak_rss_mb"] >= 0 and row["query_ms"] > 0
        assert row["query_speedup_vs_torch"] == pytest.approx(torch_row["query_ms"] / row["query_ms"], abs=0.01)
        low, high = row["delta_ci95"]
        assert low <= row["delta_vs_torch"] <= high and 0 <= row["delta_p"] <= 1
        assert row["delta_vs_torch"] == pytest.approx(row["metrics"]["ndcg@10"] - torch_row["metrics"]["ndcg@10"])
        assert row["cache"] == "miss" and (exported / "a" / "exports" / name).is_dir()
    # the fp32 graph is the torch model: the same rankings, so the same scores
    for fp32, int8 in (("onnx", "onnx_int8"), ("openvino", "openvino_int8")):
        assert rows[fp32]["metrics"]["ndcg@10"] == pytest.approx(torch_row["metrics"]["ndcg@10"], abs=1e-3)
        assert rows[int8]["size_mb"] < 0.6 * rows[fp32]["size_mb"]  # int8 weights: about a quarter
    # static int8 calibrates on training passages (the tiny run has fewer than 300: all of them)
    train = json.loads((exported / "a" / "train_pairs.json").read_text())["corpus"]
    assert rows["openvino_int8"]["calibration_texts"] == min(300, len(train)) and "calibration_texts" not in rows["onnx_int8"]
    assert (exported / "a" / "exports" / "openvino_int8" / "openvino" / "openvino_model_qint8_quantized.xml").exists()
    assert not (exported / "a" / "exports" / "onnx" / "model.safetensors").exists()
    # fidelity: the fp32 graph retrieves what torch does; int8 moves vectors a little; static is another space
    assert rows["onnx"]["top10_overlap"] == 1.0 and rows["onnx"]["cosine_min"] > 0.9999
    for name in ("onnx_int8", "openvino_int8"):
        assert 0.5 < rows[name]["top10_overlap"] <= 1.0 and 0.9 < rows[name]["cosine_min"] <= rows[name]["cosine_mean"] <= 1.0
    assert 0 <= rows["static"]["top10_overlap"] <= 1.0 and "cosine_mean" not in rows["static"]
    table = exports_table(rows, "ndcg@10")
    assert "top-10 kept" in table and f"{rows['onnx_int8']['top10_overlap']:.1%}" in table
    # every timing says what it ran on, int8 instructions included: they decide what int8 can gain
    from runner.infra.models import cpu_int8

    assert torch_row["cpu"]["int8"] == cpu_int8() and torch_row["cpu"]["cores"] == os.cpu_count()
    assert f"int8 instructions: {cpu_int8()}" in " ".join(table.split())
    # a BERT model's ONNX graphs are fused (attention, layer norms); OpenVINO converts the plain trace
    layers = json.loads((exported / "a" / "model" / "config.json").read_text())["num_hidden_layers"]
    assert rows["onnx"]["fused"]["Attention"] == rows["onnx_int8"]["fused"]["Attention"] == layers
    assert "fused" not in rows["openvino"] and "fused" not in rows["static"]


def test_a_drift_in_torchs_speed_while_the_exports_ran_is_logged_and_averaged(caplog):
    from runner.stages.export.exporting import Source, retime_torch

    class Timer:  # the torch model timed again: a machine that slowed down meanwhile
        def measure(self, target, path, texts, queries=()):
            return {"texts_per_s": 20.0, "peak_rss_mb": 300.0, "query_ms": 12.0}

    source = Source(Path("model"), None, None, "ndcg@10", ["a text"], ["a question"], [], Timer())
    row = {"texts_per_s": 30.0, "query_ms": 11.5, "peak_rss_mb": 310.0}
    with caplog.at_level("WARNING", logger="ragtune"):
        retime_torch(row, source)
    assert row["texts_per_s"] == 25.0 and row["query_ms"] == 11.75 and row["peak_rss_mb"] == 310.0
    assert row["timings"] == {"texts_per_s": [30.0, 20.0], "query_ms": [11.5, 12.0]}
    (warning,) = [r.getMessage() for r in caplog.records]  # 30 -> 20 texts/s drifted; 11.5 -> 12 ms did not
    assert "texts_per_s moved from 30.0 to 20.0" in warning


def test_the_onnx_graph_embeds_as_the_torch_model_does(exported):
    from sentence_transformers import SentenceTransformer

    from runner.stages.export.measure import load_encoder

    texts = ["What does a context manager do?", "The with statement calls __enter__ and __exit__."]
    torch_emb = SentenceTransformer(str(exported / "a" / "model"), device="cpu").encode_document(texts, normalize_embeddings=True)
    for fp32, int8 in (("onnx", "onnx_int8"), ("openvino", "openvino_int8")):
        fp32_emb = load_encoder(exported / "a" / "exports" / fp32).encode_document(texts)
        int8_emb = load_encoder(exported / "a" / "exports" / int8).encode_document(texts)
        assert np.allclose(fp32_emb, torch_emb, atol=1e-4)
        cosine = (int8_emb * torch_emb).sum(axis=1)
        assert cosine.min() > 0.9 and not np.allclose(int8_emb, torch_emb, atol=1e-4)
    static = load_encoder(exported / "a" / "exports" / "static")
    assert static.encode_document(texts).shape[0] == 2


def test_a_second_run_copies_the_exports_from_the_cache(exported):
    first = json.loads((exported / "a" / "results.json").read_text())["exports"]
    again = json.loads((exported / "b" / "results.json").read_text())
    names = ("onnx_int8", "openvino_int8", "static")
    assert {again["cache"][f"export_{n}"] for n in names} == {"hit"}
    for name in names:
        assert again["exports"][name]["metrics"] == first[name]["metrics"]  # the same model, the same files
        # the torch model's scores came from the cache without its vectors: encoded again for the fidelity
        assert again["exports"][name]["top10_overlap"] == first[name]["top10_overlap"]


def test_the_wandb_run_holds_each_exports_row(exported):
    rows = json.loads((exported / "a" / "results.json").read_text())["exports"]
    (run_file,) = (exported / "a").glob("wandb/offline-run-*/run-*.wandb")
    summary = run_contents(run_file)["summary"]
    for name in ("torch", *TARGETS):
        assert summary[f"export/{name}/texts_per_s"] == pytest.approx(rows[name]["texts_per_s"])
        assert summary[f"export/{name}/ndcg@10"] == pytest.approx(rows[name]["metrics"]["ndcg@10"])
    assert summary["export/onnx_int8/delta_ci95_low"] == pytest.approx(rows["onnx_int8"]["delta_ci95"][0])
    assert summary["export/onnx_int8/top10_overlap"] == pytest.approx(rows["onnx_int8"]["top10_overlap"])
    cpu = rows["torch"]["cpu"]
    assert summary["export/cpu/int8"] == cpu["int8"] and summary["export/cpu/name"] == cpu["name"]


def test_compare_shows_each_exports_score_and_speed(exported, tmp_path):
    from runner.compare import collect, rows_for

    columns, rows = rows_for(collect([exported / "a", exported / "b"]), "finetuned/ndcg@10")
    exports = json.loads((exported / "a" / "results.json").read_text())["exports"]
    assert {f"{t}/ndcg@10" for t in TARGETS} | {f"{t} x torch" for t in TARGETS} <= set(columns)
    # each run's ratio is the one its results.json holds (how fast is a benchmark's question, not a test's)
    speedups = {json.loads((exported / d / "results.json").read_text())["exports"]["static"]["speedup_vs_torch"] for d in "ab"}
    assert {r[columns.index("static x torch")] for r in rows} == speedups
    assert {r[columns.index("onnx_int8/ndcg@10")] for r in rows} == {exports["onnx_int8"]["metrics"]["ndcg@10"]}


def test_an_export_serves_a_llama_index_vector_store_as_the_docs_show(exported):
    from llama_index.core import Document, Settings

    docs = [
        Document(text="The with statement calls __enter__ on entry and __exit__ on the way out."),
        Document(text="A lambda expression yields an anonymous function object."),
        Document(text="The global statement declares names that live in the module namespace."),
    ]
    readme = (ROOT / "docs" / "llamaindex.md").read_text()
    code = readme.split("<!-- example: load_embedding -->")[1].split("```python")[1].split("```")[0]
    before = Settings._embed_model
    try:
        for name in ("onnx_int8", "openvino_int8", "static"):
            scope = {"documents": docs}
            path = str(exported / "a" / "exports" / name)
            exec(code.replace('"outputs/runs/<date>/<run>/exports/onnx_int8"', repr(path)), scope)
            hits = scope["index"].as_retriever(similarity_top_k=3).retrieve("anonymous function lambda")
            assert len(hits) == 3 and {h.node.get_content() for h in hits} == {d.text for d in docs}
            assert all(np.isfinite(h.score) for h in hits) and Settings.embed_model.model_name == path
    finally:
        Settings._embed_model = before


def test_a_missing_library_is_a_config_error_that_names_the_extra(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(RagtuneError) as err:
        run(compose(fast(tiny_model, "logger=none", "export=onnx_int8"), tmp_path / "run"))
    assert "export=onnx_int8 needs onnxruntime, which is not installed: pip install 'ragtune[export]'" in str(err.value)
    assert not (tmp_path / "run" / "model").exists()  # found before anything was computed


def test_an_export_that_fails_keeps_the_model_and_the_results(tiny_model, tmp_path, monkeypatch):
    from runner.stages.export import exporting

    def broken(*_a, **_k):
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX opset version 17 is not supported")

    monkeypatch.setattr(exporting, "export_onnx", broken)
    with pytest.raises(RagtuneError) as err:
        run(compose(fast(tiny_model, "logger=none", "export=[onnx,static]"), tmp_path / "run"))
    assert "export=onnx failed: Exporting the operator 'aten::weird'" in str(err.value)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert "error" in results["exports"]["onnx"] and results["exports"]["static"]["texts_per_s"] > 0
    assert (tmp_path / "run" / "model" / "model.safetensors").exists() and results["verdict"]["deploy"]


def test_bad_export_settings_are_clear_errors(tiny_model, tmp_path):
    proc = run_cli(*fast(tiny_model, "logger=none"), "+export.tflite={}", f"hydra.run.dir={tmp_path}/a")
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2
    assert "export.tflite is not an export target: choose from onnx, onnx_int8, openvino, openvino_int8, static, truncate" in said
    bad = ("export=[onnx,openvino_int8]", "export.onnx.opset=11", "export.openvino_int8.preset=fast", "finetune=none")
    proc = run_cli(*fast(tiny_model, "logger=none"), *bad, f"hydra.run.dir={tmp_path}/b")
    assert proc.returncode == 2
    said = proc.stdout + proc.stderr
    assert "export.onnx.opset=11 is too old" in said and "finetune=none trains none" in said
    assert "export.openvino_int8.preset='fast' is not an NNCF preset: use performance or mixed" in said
    # an adapter is no model an exporter converts: refused before the model loads, nothing trained or written
    proc = run_cli(*fast(tiny_model, "logger=none"), "finetune=adapter", "export=onnx", f"hydra.run.dir={tmp_path}/c")
    said = proc.stdout + proc.stderr
    assert proc.returncode == 2 and "finetune=adapter trains a LlamaIndex adapter" in said and "export=onnx" in said
    assert not (tmp_path / "c" / "results.json").exists() and "[finetune]" not in said


def test_a_changed_knob_or_model_file_misses_the_export_cache(tiny_model, tmp_path, monkeypatch):
    """The export key holds the model's content and every knob: an identical export is a hit, a changed
    `per_channel` or a changed weight file a miss; the model card (README.md) and the path are not in it."""
    import shutil

    from omegaconf import OmegaConf

    from runner.infra.stage_cache import StageCache
    from runner.stages.export import exporting
    from runner.stages.export.schema import OnnxInt8Export

    built = []

    def fake_build(target, spec, model_dir, out, device, calibration):  # what was built from what, not a real export
        out.mkdir(parents=True)
        (out / "made_from.txt").write_text(f"{model_dir.name} {OmegaConf.to_container(spec)}")
        built.append(out)
        return out

    monkeypatch.setattr(exporting, "build", fake_build)
    stages = StageCache(tmp_path / "cache")
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    spec = OmegaConf.structured(OnnxInt8Export)

    def export(spec, model_dir=model, calibration=()):
        path = tmp_path / "run" / "exports" / "onnx_int8"
        return exporting.cached_build(stages, "onnx_int8", spec, model_dir, path, "cpu", calibration)[0]

    assert export(spec) == "miss" and len(built) == 1
    assert export(spec) == "hit" and len(built) == 1
    (model / "README.md").write_text("a model card naming another run")
    moved = tmp_path / "elsewhere" / "model"
    shutil.copytree(model, moved)
    assert export(spec, moved) == "hit" and len(built) == 1  # the card and the path are not the weights
    assert export(OmegaConf.merge(spec, {"per_channel": False})) == "miss" and len(built) == 2
    weights = next(p for p in model.iterdir() if p.suffix in (".safetensors", ".bin"))
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    assert export(spec) == "miss" and len(built) == 3
    assert export(spec) == "hit" and len(built) == 3
    assert export(spec, calibration=["a passage", "another"]) == "miss" and len(built) == 4  # int8 ranges
    assert export(spec, calibration=["a passage", "another"]) == "hit" and len(built) == 4
    assert export(spec, calibration=["a passage", "a third"]) == "miss" and len(built) == 5
    assert export(OmegaConf.merge(spec, {"fuse": False})) == "miss" and len(built) == 6  # the plain trace
    assert (tmp_path / "run" / "exports" / "onnx_int8" / "made_from.txt").exists()


def test_the_timing_server_answers_each_backend_and_survives_one_that_fails(tiny_model, tmp_path):
    from runner.stages.export.exporting import Timer

    timer = Timer()
    try:
        got = timer.measure("torch", tiny_model, ["a passage to encode"] * 40, ["a question?"] * 8)
        assert got["texts_per_s"] > 0 and got["peak_rss_mb"] >= 0 and got["query_ms"] > 0
        with pytest.raises(RuntimeError, match="measuring broken failed: .*"):
            timer.measure("broken", tmp_path, ["a passage"] * 40)  # no model there: the child fails, not the server
        assert "query_ms" not in timer.measure("torch", tiny_model, ["another passage"] * 40)  # no queries, none timed
    finally:
        timer.close()
    assert timer.server.returncode == 0


def test_a_bert_graph_is_fused_and_gives_the_plain_graphs_numbers(tiny_model, tmp_path, monkeypatch):
    import onnx

    from runner.stages.export import onnx as exporter
    from runner.stages.export.measure import load_encoder

    fused = exporter.export_onnx(tiny_model, tmp_path / "fused", 17, fuse=True)
    plain = exporter.export_onnx(tiny_model, tmp_path / "plain", 17, fuse=False)
    layers = json.loads((tiny_model / "config.json").read_text())["num_hidden_layers"]
    ops = [n.op_type for n in onnx.load(str(fused)).graph.node]
    assert ops.count("Attention") == layers and "Softmax" not in ops
    assert "Attention" not in [n.op_type for n in onnx.load(str(plain)).graph.node]
    said = json.loads((tmp_path / "fused" / exporter.FUSIONS).read_text())
    assert said["model_type"] == "bert" and said["fused"]["Attention"] == layers
    assert json.loads((tmp_path / "plain" / exporter.FUSIONS).read_text())["fused"] == {}
    texts = ["short", "a much longer text, so that the batch is padded: the mask must hide the padding"]
    fused_emb, plain_emb = (load_encoder(tmp_path / name).encode_document(texts) for name in ("fused", "plain"))
    assert np.allclose(fused_emb, plain_emb, atol=1e-5)
    int8 = exporter.quantize_int8(tmp_path / "fused", tmp_path / "int8", per_channel=True, reduce_range=True)
    assert [n.op_type for n in onnx.load(str(int8)).graph.node].count("QAttention") == layers
    monkeypatch.setattr(exporter, "FUSED_TOLERANCE", -1.0)  # any difference at all is too much
    with pytest.raises(ValueError, match=r"differs from the plain one .* export.<target>.fuse=false"):
        exporter.export_onnx(tiny_model, tmp_path / "strict", 17, fuse=True)


def test_openvino_int8_calibrates_on_texts_cut_to_the_models_window(tiny_model, tmp_path, monkeypatch):
    import shutil

    import nncf

    from runner.stages.export.openvino import quantize_openvino_int8

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    config = json.loads((model / "sentence_bert_config.json").read_text())
    (model / "sentence_bert_config.json").write_text(json.dumps({**config, "max_seq_length": 8}))
    seen = []

    class Recorded(nncf.Dataset):  # the samples NNCF is given
        def __init__(self, samples, *args):
            seen.extend(samples)
            super().__init__(samples, *args)

    monkeypatch.setattr(nncf, "Dataset", Recorded)
    texts = ["a calibration passage that is much longer than eight word pieces, as training passages are"] * 3
    quantize_openvino_int8(model, tmp_path / "int8", 17, texts, "performance")
    assert seen and {s["input_ids"].shape[1] for s in seen} == {8}  # the window the model serves, not the tokenizer's 512
