"""One backend's encode speed and memory, measured in a process of its own.

    python -m runner.stages.export.measure PATH JSON  # [texts, queries] -> {"texts_per_s":, "peak_rss_mb":, "query_ms":}
    python -m runner.stages.export.measure --serve           # the same for each request line, forked

PATH is a trained model directory (torch, fp32 on the CPU) or an export (onnx, onnx_int8, openvino,
openvino_int8, static). The
libraries are imported first; the memory is the process's peak resident set (VmHWM) less what
it held before loading the model: what the model and one batch of encoding add.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

BATCH = 32  # texts a batch; the first batch is a warm-up, not timed
WARM_QUERIES = 3  # single queries encoded before the timed ones


def load_encoder(path: Path):
    """A model directory or export as an encoder the scorer takes (encode_query / encode_document):
    ONNX Runtime or OpenVINO where it holds a graph, else sentence-transformers (the torch model, a
    static model)."""
    from runner.stages.export.encoder import GraphEncoder, graph_of

    if graph_of(path):
        return GraphEncoder(path)
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


LIBRARIES = ["sentence_transformers", "transformers", "onnxruntime", "openvino"]  # imported before the baseline


def serve() -> None:
    """Answer requests, one JSON line each on stdin (`{"path":, "texts":, "queries":}`), with one JSON line each
    on stdout, each measured in a child forked from this process: the libraries are imported once,
    yet every backend has a process of its own. This process imports and never encodes, so it holds
    no thread pool a fork could break."""
    answers = os.fdopen(os.dup(1), "w")  # the answers' own channel: what a library prints goes to stderr
    os.dup2(2, 1)
    _import_libraries()
    for line in sys.stdin:
        request = json.loads(line)
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: measure, answer, exit without the parent's atexit handlers
            os.close(read)
            try:
                answer = timed(request["path"], request["texts"], request.get("queries", ()))
            except BaseException as err:
                answer = {"error": f"{type(err).__name__}: {err}"}
            os.write(write, json.dumps(answer).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as got:
            answer = got.read()
        _, code = os.waitpid(pid, 0)
        print(answer or json.dumps({"error": f"the process ended with status {code}"}), file=answers, flush=True)


def _import_libraries() -> None:
    import importlib.util

    for name in LIBRARIES:
        if importlib.util.find_spec(name) is not None:
            __import__(name)


def timed(path: str, texts: list[str], queries=()) -> dict:
    """Encode `texts` with the backend in `path` after a warm-up batch: texts/s and the memory added;
    then each of `queries` alone, as a RAG app embeds a question: the median milliseconds a query."""
    _import_libraries()  # their memory is not the model's
    status = Path("/proc/self/clear_refs")
    if status.exists():  # a forked process starts at its server's peak: restart the high-water mark
        status.write_text("5")
    before = _rss_mb()
    encoder = load_encoder(Path(path))
    encoder.encode_document(texts[:BATCH], batch_size=BATCH)
    start = time.perf_counter()
    encoder.encode_document(texts, batch_size=BATCH, show_progress_bar=False)
    seconds = time.perf_counter() - start
    got = {"texts_per_s": round(len(texts) / seconds, 1), "peak_rss_mb": round(max(_peak_mb() - before, 0.0), 1)}
    if queries:
        for query in queries[:WARM_QUERIES]:
            encoder.encode_query([query], batch_size=1)
        latencies = []
        for query in queries:
            start = time.perf_counter()
            encoder.encode_query([query], batch_size=1, show_progress_bar=False)
            latencies.append(time.perf_counter() - start)
        got["query_ms"] = round(1000 * sorted(latencies)[len(latencies) // 2], 2)
    return got


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        print(json.dumps(timed(sys.argv[1], *json.loads(Path(sys.argv[2]).read_text()))))
