"""The export stage: write each target next to model/, score it on the eval set paired against the
torch model it came from, time it against that model on the same texts, and say what it costs.

Timings are on the CPU (where most RAG apps embed), torch in fp32, every backend on the same passages
of the eval set in the same order and batch size, after one warm-up batch; torch is timed before and
after the exports and its row is the mean of both (the two are kept: a drift shows); peak memory is the growth
of the process's resident memory while the backend loads and encodes them. An export is cached by the
content of the model directory it comes from, its knobs, the code and the libraries' versions
(`<cache.dir>/export/<target>/<key>/`), so a sweep that retrains the same model exports it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runner.infra.errors import first_line
from runner.infra.fingerprint import path_fingerprint, short_identity
from runner.infra.metrics import Paired
from runner.infra.models import cpu_int8, cpu_name
from runner.stages.evaluate.scoring import evaluate_model, with_embeddings
from runner.stages.export.encoder import graph_of
from runner.stages.export.measure import load_encoder
from runner.stages.export.onnx import FUSIONS, SKIP, export_onnx, quantize_int8
from runner.stages.export.openvino import export_openvino, quantize_openvino_int8
from runner.stages.export.schema import EXTRA, missing_packages
from runner.stages.export.static import distill_static
from runner.stages.export.truncate import save_truncated

log = logging.getLogger("ragtune")
TIMING_TEXTS = 512  # eval passages each backend encodes for its texts/s
TIMING_QUERIES = 64  # eval questions each backend encodes one at a time for its query latency
DRIFT = 0.10  # torch timed before and after the exports: a wider gap than this share is logged

LOADS = {
    "torch": 'HuggingFaceEmbedding(model_name="{path}")',
    "onnx": 'ragtune.load_embedding("{path}")  # or SentenceTransformer("{path}", backend="onnx") with optimum',
    "onnx_int8": 'ragtune.load_embedding("{path}")  # or backend="onnx", model_kwargs={{"file_name": "onnx/model_qint8.onnx"}}',
    "openvino": 'ragtune.load_embedding("{path}")  # or SentenceTransformer("{path}", backend="openvino") with optimum-intel',
    "openvino_int8": 'ragtune.load_embedding("{path}")  # or backend="openvino", model_kwargs='
    '{{"file_name": "openvino/openvino_model_qint8_quantized.xml"}}',
    "static": 'ragtune.load_embedding("{path}")  # or SentenceTransformer("{path}")',
    "truncate": 'HuggingFaceEmbedding(model_name="{path}")  # truncate_dim is in its config',
}


def build(target: str, spec, model_dir: Path, out: Path, device: str, calibration: list[str]) -> Path:
    """Write the export `target` of the model in `model_dir` into `out` (a new directory);
    `calibration` is the training passages a static int8 quantization sets its ranges on."""
    if target == "onnx":
        export_onnx(model_dir, out, spec.opset, spec.fuse)
    elif target == "onnx_int8":
        with tempfile.TemporaryDirectory(prefix="ragtune-onnx-") as tmp:
            export_onnx(model_dir, Path(tmp) / "onnx", spec.opset, spec.fuse)
            quantize_int8(Path(tmp) / "onnx", out, spec.per_channel, spec.reduce_range)
    elif target == "openvino":
        export_openvino(model_dir, out, spec.opset)
    elif target == "openvino_int8":
        quantize_openvino_int8(model_dir, out, spec.opset, calibration, spec.preset)
    elif target == "truncate":
        save_truncated(model_dir, out, spec.dim)
    elif target == "static":
        distill_static(model_dir, out, spec.pca_dims, device)
    return out


class Timer:
    """Each backend's encode speed and peak memory, in a process of its own: forked, on POSIX, from
    one `measure --serve` process that imported the libraries once (a new interpreter per backend
    cost ~10 s of imports each); elsewhere a new interpreter per backend. One backend's freed memory
    cannot hide another's peak, and none runs beside another's threads."""

    def __init__(self):
        self.server = None
        if hasattr(os, "fork"):
            cmd = [sys.executable, "-m", "runner.stages.export.measure", "--serve"]
            pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.DEVNULL}  # errors: in the answer
            self.server = subprocess.Popen(cmd, text=True, **pipes)

    def measure(self, target: str, path: Path, texts: list[str], queries=()) -> dict:
        """{texts_per_s: encoding `texts` in batches after a warm-up batch, peak_rss_mb: resident
        memory that loading and encoding added, query_ms: the median of `queries` one at a time}."""
        if self.server is None or self.server.poll() is not None:
            return _measure_in_new_interpreter(target, path, texts, list(queries))
        self.server.stdin.write(json.dumps({"path": str(path), "texts": texts, "queries": list(queries)}) + "\n")
        self.server.stdin.flush()
        got = json.loads(self.server.stdout.readline() or '{"error": "the timing process ended"}')
        if "error" in got:
            raise RuntimeError(f"measuring {target} failed: {got['error'][:300]}")
        return got

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()
            self.server.wait()


@dataclass
class Source:
    """What every export is measured against: the trained model, its eval-set result, the eval set,
    the passages timed (the eval set's longest) and the training passages int8 calibrates on."""

    model_dir: Path
    reference: object  # the torch model's EvalResult on the eval set
    eval_set: object
    metric: str
    texts: list[str]
    queries: list[str]
    passages: list[str]
    timer: Timer


def export_all(cfg, stages, model_dir: Path, reference, eval_set, metric: str, out: Path, device: str, passages=()) -> dict:
    """Every target of `cfg.export`, each a row: where it is, size, texts/s and its ratio to torch,
    peak memory, its metrics on the eval set and the paired difference from the torch model. A
    target that fails is a row with its error; the others, the model and the results stay.
    `passages` are the training pairs' passages (calibration data; never the eval set's)."""
    texts = sorted(eval_set.corpus.values(), key=len)[-TIMING_TEXTS:]  # the longest: what serving pays for
    queries = [eval_set.queries[q] for q in eval_set.answered_query_ids()[:TIMING_QUERIES]]
    reference = with_embeddings(reference, Path(model_dir), eval_set, cfg.evaluate)
    source = Source(Path(model_dir), reference, eval_set, metric, texts, queries, list(passages), Timer())
    rows = {}
    try:
        for target, spec in {"torch": None, **cfg.export}.items():
            try:
                rows[target] = _torch_row(source) if spec is None else _export_row(cfg, stages, target, spec, source, out, device)
            except Exception as err:  # an op the exporter cannot handle, a missing library: this target only
                hint = f" ({EXTRA})" if isinstance(err, ImportError) or (spec is not None and missing_packages(target)) else ""
                rows[target] = {"error": f"export={target} failed: {first_line(err, 300)}{hint}"}
                log.error("[export] %s", rows[target]["error"])
        if len(rows) > 1 and "error" not in rows["torch"]:
            retime_torch(rows["torch"], source)
    finally:
        source.timer.close()
    torch_speed, torch_ms = rows["torch"].get("texts_per_s"), rows["torch"].get("query_ms")
    for row in rows.values():
        if "texts_per_s" in row and torch_speed:
            row["speedup_vs_torch"] = round(row["texts_per_s"] / torch_speed, 2)
        if row.get("query_ms") and torch_ms:
            row["query_speedup_vs_torch"] = round(torch_ms / row["query_ms"], 2)
    return rows


def _torch_row(source: Source) -> dict:
    timing = source.timer.measure("torch", source.model_dir, source.texts, source.queries)
    return {
        "path": str(source.model_dir),
        "size_mb": size_mb(source.model_dir),
        **timing,
        "metrics": source.reference.metrics,
        "cpu": {"name": cpu_name(), "cores": os.cpu_count(), "int8": cpu_int8()},  # what every timing ran on
        "llama_index": LOADS["torch"].format(path=source.model_dir),
    }


def retime_torch(row: dict, source: Source) -> None:
    """Time the torch model again after the exports, and make its row the mean of both timings: every
    ratio is then against torch measured before and after, and `timings` keeps the two, so a machine
    whose speed drifted while the exports ran (another job, a noisy neighbour) shows, and is logged."""
    again = source.timer.measure("torch", source.model_dir, source.texts, source.queries)
    keys = [k for k in ("texts_per_s", "query_ms") if k in row and k in again]
    row["timings"] = {k: [row[k], again[k]] for k in keys}
    for key, (first, last) in row["timings"].items():
        row[key] = round((first + last) / 2, 2)
        if abs(first - last) > DRIFT * row[key]:
            log.warning(
                "[export] torch's %s moved from %s to %s while the exports were timed: this machine's speed drifted, "
                "so the ratios to torch are uncertain by as much; time again on a quiet machine",
                key,
                first,
                last,
            )


def _export_row(cfg, stages, target: str, spec, source: Source, out: Path, device: str) -> dict:
    path = out / "exports" / target
    calibration = calibration_texts(source.passages, spec, cfg.seed)
    status, seconds = cached_build(stages, target, spec, source.model_dir, path, device, calibration)
    timing = source.timer.measure(target, path, source.texts, source.queries)
    encoder = load_encoder(path)
    model_id = short_identity(f"{target}:{path}", path_fingerprint(path))
    result = evaluate_model(encoder, source.eval_set, cfg.evaluate, cfg.evaluate.batch_size, model_id=model_id, precision="fp32")
    ref, got = np.asarray(source.reference.per_query[source.metric]), np.asarray(result.per_query[source.metric])
    same_model = graph_of(path) is not None  # a graph is the torch model in another runtime: its vectors compare
    n, seed = cfg.evaluate.bootstrap, cfg.seed
    return {
        "path": str(path),
        "size_mb": size_mb(path),
        **timing,
        "metrics": result.metrics,
        **Paired.of(ref, got, n, seed).as_dict("delta_vs_torch", "delta_ci95", "delta_p"),
        **fidelity(source.reference, result, cosine=same_model),
        "export_s": seconds,
        "cache": status,
        **({"fused": json.loads((path / FUSIONS).read_text())["fused"]} if (path / FUSIONS).exists() else {}),
        **({"calibration_texts": len(calibration)} if calibration else {}),
        **({"dim": spec.dim} if target == "truncate" else {}),
        "llama_index": LOADS[target].format(path=path),
    }


def fidelity(reference, result, cosine: bool) -> dict:
    """How close the export stays to the torch model on the eval set, steadier than a metric's
    difference: `top10_overlap`, the share of the torch model's top 10 passages for each question
    that the export also retrieves (mean over questions); with `cosine` (the same vector space), the
    cosine between the two embeddings of each eval passage (`cosine_mean`, `cosine_min`)."""
    import torch

    (ref_index, ref_queries), (index, queries) = reference.dense, result.dense
    ref_top = ref_index.search(ref_queries, ref_index.model_id, 10).tolist()
    top = index.search(queries, index.model_id, 10).tolist()
    got = {"top10_overlap": round(float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(ref_top, top)])), 4)}
    if cosine:
        cos = (torch.as_tensor(ref_index.embeddings).float().cpu() * torch.as_tensor(index.embeddings).float().cpu()).sum(dim=1)
        got.update(cosine_mean=round(float(cos.mean()), 4), cosine_min=round(float(cos.min()), 4))
    return got


def calibration_texts(passages: list[str], spec, seed: int) -> list[str]:
    """The training passages a static quantization calibrates on: `spec.calibration_texts` of them,
    drawn with the run's seed (all when there are fewer); none for a target that needs none."""
    n = spec.get("calibration_texts") if spec is not None else None
    if not n:
        return []
    return random.Random(seed).sample(passages, n) if len(passages) > n else list(passages)


def cached_build(stages, target: str, spec, model_dir: Path, path: Path, device: str, calibration=()) -> tuple[str, float]:
    """Build the export into `path`, or copy it from the cache (the stage `export_<target>`, an entry like
    every other stage's); ("hit" | "miss" | "off", seconds)."""
    from omegaconf import OmegaConf

    config = {"target": target, "spec": OmegaConf.to_container(spec), "model": model_content(model_dir)}
    if calibration:  # the texts themselves decide the int8 ranges
        config["calibration"] = hashlib.sha256(json.dumps(list(calibration)).encode()).hexdigest()
    stage = f"export_{target}"
    key = stages.key(stage, config, code=(build,))
    start = time.perf_counter()
    status = stages.run_files(stage, key, lambda out: build(target, spec, model_dir, out, device, list(calibration)), path)
    return status, round(time.perf_counter() - start, 3)


def model_content(model_dir: Path) -> str:
    """SHA-256 of the model directory's files but its model card (README.md names the run, not the
    weights) and where it lies: the same trained model in another run dir is the same export."""
    return path_fingerprint(model_dir, ignore=SKIP)["sha256"]


def _measure_in_new_interpreter(target: str, path: Path, texts: list[str], queries: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="ragtune-measure-") as tmp:
        (Path(tmp) / "texts.json").write_text(json.dumps([texts, queries]))
        proc = subprocess.run(
            [sys.executable, "-m", "runner.stages.export.measure", str(path), str(Path(tmp) / "texts.json")],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {target} failed: {last[:300]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def size_mb(path: Path) -> float:
    """What the model directory holds on disk, in MB (2^20 bytes)."""
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20, 2)
