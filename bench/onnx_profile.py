"""Where an ONNX export's encoding time goes, operator by operator (ONNX Runtime's own profiler).

    python bench/onnx_profile.py RUN_DIR EXPORT_DIR
    python bench/onnx_profile.py outputs/bench/runs/<stamp>_supervised outputs/bench/exports/<stamp>_supervised/exports/onnx_int8

Encodes the run's eval passages (the 512 longest, batch 32, after a warm-up batch: what the export
row times) through the export's graph with profiling on, and prints each operator type's share of
the graph's time (the warm-up batch included): how much is int8 matrix products (`DynamicQuantizeMatMul`, `QAttention`'s
projections) and how much stays fp32 (attention scores inside `Attention`/`QAttention`, layer norms,
GELU). Profiling adds a little overhead; the texts/s printed is for orientation, not for the docs.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("export_dir", type=Path)
    args = ap.parse_args()

    import onnxruntime as ort

    from runner.data.pairs import EmbeddingQAFinetuneDataset
    from runner.stages.export.encoder import GraphEncoder, graph_of
    from runner.stages.export.exporting import TIMING_TEXTS
    from runner.stages.export.measure import BATCH

    corpus = EmbeddingQAFinetuneDataset.from_json(str(args.run_dir / "eval_set.json")).corpus
    texts = sorted(corpus.values(), key=len)[-TIMING_TEXTS:]
    encoder = GraphEncoder(args.export_dir)
    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.enable_profiling, options.profile_file_prefix = True, str(Path(tmp) / "profile")
        encoder.run.session = ort.InferenceSession(str(graph_of(args.export_dir)), options, providers=["CPUExecutionProvider"])
        encoder.encode_document(texts[:BATCH], batch_size=BATCH)
        start = time.perf_counter()
        encoder.encode_document(texts, batch_size=BATCH)
        seconds = time.perf_counter() - start
        events = json.loads(Path(encoder.run.session.end_profiling()).read_text())
    by_op = collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
    total = sum(by_op.values())
    print(f"{graph_of(args.export_dir)}: {len(texts)} passages, {len(texts) / seconds:.1f} texts/s with profiling on")
    print(f"{'operator':28s} {'seconds':>8s} {'share':>6s}")
    for op, micros in by_op.most_common():
        print(f"{op:28s} {micros / 1e6:8.2f} {100 * micros / total:5.1f}%")


if __name__ == "__main__":
    main()
