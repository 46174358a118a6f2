"""The export stage: write each target next to model/, score it on the eval set paired against the
torch model it came from, time it against that model on the same texts, and say what it costs.

Timings are on the CPU (where most RAG apps embed), torch in fp32, every backend on the same passages
of the eval set in the same order and batch size, after one warm-up batch; peak memory is the growth
of the process's resident memory while the backend loads and encodes them. An export is cached by the
content of the model directory it comes from, its knobs, the code and the libraries' versions
(`<cache.dir>/export/<target>/<key>/`), so a sweep that retrains the same model exports it once.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from runner.infra.errors import first_line
from runner.infra.fingerprint import path_fingerprint, short_identity
from runner.infra.metrics import paired_bootstrap_ci, paired_randomization_p
from runner.stages.evaluate.scoring import evaluate_model
from runner.stages.export.measure import load_encoder
from runner.stages.export.onnx import SKIP, export_onnx, quantize_int8
from runner.stages.export.schema import EXTRA, missing_packages
from runner.stages.export.static import distill_static

log = logging.getLogger("ragtune")
TIMING_TEXTS = 512  # eval passages each backend encodes for its texts/s

LOADS = {
    "torch": 'HuggingFaceEmbedding(model_name="{path}")',
    "onnx": 'ragtune.load_embedding("{path}")  # or SentenceTransformer("{path}", backend="onnx") with optimum',
    "onnx_int8": 'ragtune.load_embedding("{path}")  # or backend="onnx", model_kwargs={{"file_name": "onnx/model_qint8.onnx"}}',
    "static": 'ragtune.load_embedding("{path}")  # or SentenceTransformer("{path}")',
}


def build(target: str, spec, model_dir: Path, out: Path, device: str) -> Path:
    """Write the export `target` of the model in `model_dir` into `out` (a new directory)."""
    if target == "onnx":
        export_onnx(model_dir, out, spec.opset)
    elif target == "onnx_int8":
        with tempfile.TemporaryDirectory(prefix="ragtune-onnx-") as tmp:
            export_onnx(model_dir, Path(tmp) / "onnx", spec.opset)
            quantize_int8(Path(tmp) / "onnx", out, spec.per_channel, spec.reduce_range)
    elif target == "static":
        distill_static(model_dir, out, spec.pca_dims, device)
    return out


def export_all(cfg, stages, model_dir: Path, reference, eval_set, metric: str, out: Path, device: str) -> dict:
    """Every target of `cfg.export`, each a row: where it is, size, texts/s and its ratio to torch,
    peak memory, its metrics on the eval set and the paired difference from the torch model. A
    target that fails is a row with its error; the others, the model and the results stay."""
    texts = sorted(eval_set.corpus.values(), key=len)[-TIMING_TEXTS:]  # the longest: what serving pays for
    rows = {"torch": _torch_row(model_dir, reference, texts)}
    for target, spec in cfg.export.items():
        try:
            rows[target] = _export_row(cfg, stages, target, spec, model_dir, reference, eval_set, metric, out, device, texts)
        except Exception as err:  # an op the exporter cannot handle, a missing library: this target only
            hint = f" ({EXTRA})" if isinstance(err, ImportError) or missing_packages(target) else ""
            rows[target] = {"error": f"export={target} failed: {first_line(err, 300)}{hint}"}
            log.error("[export] %s", rows[target]["error"])
    torch_speed = rows["torch"]["texts_per_s"]
    for row in rows.values():
        if "texts_per_s" in row:
            row["speedup_vs_torch"] = round(row["texts_per_s"] / torch_speed, 2)
    return rows


def _torch_row(model_dir: Path, reference, texts: list[str]) -> dict:
    speed, peak = measure("torch", model_dir, texts)
    return {
        "path": str(model_dir),
        "size_mb": size_mb(model_dir),
        "texts_per_s": speed,
        "peak_rss_mb": peak,
        "metrics": reference.metrics,
        "llama_index": LOADS["torch"].format(path=model_dir),
    }


def _export_row(cfg, stages, target, spec, model_dir, reference, eval_set, metric, out, device, texts) -> dict:
    path = out / "exports" / target
    status, seconds = cached_build(stages, target, spec, model_dir, path, device)
    speed, peak = measure(target, path, texts)
    encoder = load_encoder(path)
    model_id = short_identity(f"{target}:{path}", path_fingerprint(path))
    result = evaluate_model(encoder, eval_set, cfg.evaluate, cfg.evaluate.batch_size, model_id=model_id, precision="fp32")
    ref, got = np.asarray(reference.per_query[metric]), np.asarray(result.per_query[metric])
    n, seed = cfg.evaluate.bootstrap, cfg.seed
    return {
        "path": str(path),
        "size_mb": size_mb(path),
        "texts_per_s": speed,
        "peak_rss_mb": peak,
        "metrics": result.metrics,
        "delta_vs_torch": float(got.mean() - ref.mean()),
        "delta_ci95": list(paired_bootstrap_ci(ref, got, n, seed)),
        "delta_p": paired_randomization_p(ref, got, n, seed),
        "export_s": seconds,
        "cache": status,
        "llama_index": LOADS[target].format(path=path),
    }


def cached_build(stages, target: str, spec, model_dir: Path, path: Path, device: str) -> tuple[str, float]:
    """Build the export into `path`, or copy it from the cache; ("hit" | "miss" | "off", seconds)."""
    from omegaconf import OmegaConf

    config = {"target": target, "spec": OmegaConf.to_container(spec), "model": model_content(model_dir)}
    key = stages.key(f"export_{target}", config, code=(build,))
    entry = Path(stages.root) / "export" / target / key
    start = time.perf_counter()
    if path.exists():
        shutil.rmtree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if stages.enabled and (entry / "DONE").exists():
        shutil.copytree(entry, path, ignore=shutil.ignore_patterns("DONE"))
        stages.status[f"export_{target}"] = "hit"
        return "hit", round(time.perf_counter() - start, 3)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target}-", dir=path.parent))
    shutil.rmtree(tmp)
    build(target, spec, model_dir, tmp, device)
    seconds = round(time.perf_counter() - start, 3)
    if stages.enabled:  # into the cache first (temp dir, a marker, a rename), then the run dir
        staging = entry.parent / f".{key}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(tmp, staging)
        (staging / "DONE").write_text("")
        try:
            staging.rename(entry)
        except OSError:  # another job stored the same key first: the same content by construction
            shutil.rmtree(staging, ignore_errors=True)
    tmp.rename(path)
    stages.status[f"export_{target}"] = "miss" if stages.enabled else "off"
    return stages.status[f"export_{target}"], seconds


def model_content(model_dir: Path) -> str:
    """SHA-256 of the model directory's files but its model card (README.md names the run, not the
    weights) and where it lies: the same trained model in another run dir is the same export."""
    return path_fingerprint(model_dir, ignore=SKIP)["sha256"]


def measure(target: str, path: Path, texts: list[str]) -> tuple[float, float]:
    """(texts per second encoding `texts` after a warm-up batch, peak resident memory in MB that
    loading and encoding added), in a fresh process per backend: one backend's freed memory cannot
    hide another's peak, and none runs beside another's threads."""
    with tempfile.TemporaryDirectory(prefix="ragtune-measure-") as tmp:
        (Path(tmp) / "texts.json").write_text(json.dumps(texts))
        proc = subprocess.run(
            [sys.executable, "-m", "runner.stages.export.measure", str(path), str(Path(tmp) / "texts.json")],
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {target} failed: {last[:300]}")
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    return got["texts_per_s"], got["peak_rss_mb"]


def size_mb(path: Path) -> float:
    """What the model directory holds on disk, in MB (2^20 bytes)."""
    return round(sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20, 2)
