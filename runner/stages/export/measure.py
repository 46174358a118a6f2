"""One backend's encode speed and memory, measured in a process of its own.

    python -m runner.stages.export.measure PATH TEXTS_JSON   # prints {"texts_per_s":, "peak_rss_mb":}

PATH is a trained model directory (torch, fp32 on the CPU) or an export (onnx, onnx_int8, static). The
libraries are imported first; the memory is the process's peak resident set (VmHWM) less what
it held before loading the model: what the model and one batch of encoding add.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

BATCH = 32  # texts a batch; the first batch is a warm-up, not timed


def load_encoder(path: Path):
    """A model directory or export as an encoder the scorer takes (encode_query / encode_document):
    ONNX Runtime where it holds a graph, else sentence-transformers (the torch model, a static model)."""
    from runner.stages.export.onnx import OnnxEncoder, graph_of

    if graph_of(path):
        return OnnxEncoder(path)
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_mb() -> float:
    """The process's peak resident set: VmHWM on Linux, which a new program starts afresh (ru_maxrss
    keeps the forking parent's peak across exec), else ru_maxrss (bytes on macOS)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main(path: str, texts_file: str) -> dict:
    import sentence_transformers  # noqa: F401  (the libraries before the baseline: their memory is not the model's)
    import transformers  # noqa: F401

    from runner.stages.export.onnx import graph_of

    if graph_of(Path(path)):
        import onnxruntime  # noqa: F401

    texts = json.loads(Path(texts_file).read_text())
    before = _rss_mb()
    encoder = load_encoder(Path(path))
    encoder.encode_document(texts[:BATCH], batch_size=BATCH)
    start = time.perf_counter()
    encoder.encode_document(texts, batch_size=BATCH, show_progress_bar=False)
    seconds = time.perf_counter() - start
    return {"texts_per_s": round(len(texts) / seconds, 1), "peak_rss_mb": round(max(_peak_mb() - before, 0.0), 1)}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
