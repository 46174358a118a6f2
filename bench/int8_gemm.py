"""What int8 can gain on this CPU at most: a transformer layer's matrix products alone, fp32 against int8.

    python bench/int8_gemm.py                        # all-MiniLM-L6-v2's shapes: hidden 384, FFN 1536
    python bench/int8_gemm.py --model outputs/bench/runs/<stamp>_supervised/model

An int8 export is only as fast as ONNX Runtime's int8 matrix products allow, and those depend on the
CPU's instructions: with VNNI or AMX a multiply-add of int8 pairs is one instruction; with AVX2 alone
it goes through 16-bit intermediate sums and gains about 2x over fp32. This times, for one batch of
32 passages at the model's window, each product of a layer (QKV, attention out, FFN in, FFN out) as
torch fp32 (what sentence-transformers runs), ONNX Runtime fp32, and ONNX Runtime int8 quantized as
`export=onnx_int8` quantizes (`quantize_dynamic`, per-channel int8 weights, 7-bit range), all in this
process, the best of 10 each, and prints the ratios. The model's other work (attention scores, layer
norms, GELU) stays fp32 in the int8 export, so a whole model gains less than these ratios.
Records go to outputs/bench/int8_gemm.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def best_seconds(fn, repeats: int = 10) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_graphs(weight: np.ndarray, folder: Path) -> tuple[Path, Path]:
    """One MatMul as an ONNX graph (fp32), and the same graph quantized as export=onnx_int8 does."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    k, n = weight.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, n])],
        [numpy_helper.from_array(weight, "w")],
    )
    fp32, int8 = folder / f"fp32_{k}x{n}.onnx", folder / f"int8_{k}x{n}.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(fp32))
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, reduce_range=True)
    return fp32, int8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a model directory: its hidden and FFN sizes (default all-MiniLM-L6-v2's)")
    ap.add_argument("--tokens", type=int, default=32 * 256, help="rows of a product: 32 passages of 256 tokens")
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from runner.infra.models import cpu_int8, cpu_name

    config = json.loads((args.model / "config.json").read_text()) if args.model else {}
    hidden, ffn = config.get("hidden_size", 384), config.get("intermediate_size", 1536)
    rng = np.random.default_rng(0)
    x_by_width = {w: rng.standard_normal((args.tokens, w)).astype(np.float32) for w in (hidden, ffn)}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        products = {"qkv": (hidden, 3 * hidden), "attn out": (hidden, hidden), "ffn in": (hidden, ffn), "ffn out": (ffn, hidden)}
        for name, (k, n) in products.items():
            weight = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
            x = x_by_width[k]
            fp32, int8 = matmul_graphs(weight, Path(tmp))
            sessions = [ort.InferenceSession(str(g), providers=["CPUExecutionProvider"]) for g in (fp32, int8)]
            xt, wt = torch.from_numpy(x), torch.from_numpy(weight)
            with torch.inference_mode():
                seconds = {"torch fp32": best_seconds(lambda: xt @ wt)}
            seconds["ort fp32"] = best_seconds(lambda: sessions[0].run(None, {"x": x}))
            seconds["ort int8"] = best_seconds(lambda: sessions[1].run(None, {"x": x}))
            flops = 2 * args.tokens * k * n
            speeds = {f"{b} GFLOP/s": round(flops / s / 1e9, 1) for b, s in seconds.items()}
            rows.append({"product": name, "shape": [args.tokens, k, n], **speeds})
            rows[-1]["int8 x torch"] = round(seconds["torch fp32"] / seconds["ort int8"], 2)
            rows[-1]["int8 x ort fp32"] = round(seconds["ort fp32"] / seconds["ort int8"], 2)
    cpu = {"name": cpu_name(), "int8": cpu_int8(), "torch_threads": torch.get_num_threads()}
    print(f"CPU: {cpu['name']} ({cpu['torch_threads']} torch threads), int8 instructions: {cpu['int8']}")
    header = f"{'product':10s} {'shape':>18s} {'torch fp32':>11s} {'ort fp32':>9s} {'ort int8':>9s}"
    print(f"{header}  GFLOP/s   int8 x torch  x ort fp32")
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        print(
            f"{r['product']:10s} {shape:>18s} {r['torch fp32 GFLOP/s']:11.1f} {r['ort fp32 GFLOP/s']:9.1f} "
            f"{r['ort int8 GFLOP/s']:9.1f}            {r['int8 x torch']:12.2f} {r['int8 x ort fp32']:11.2f}"
        )
    out = ROOT / "outputs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    with (out / "int8_gemm.jsonl").open("a") as f:
        f.write(json.dumps({"cpu": cpu, "model": str(args.model or "all-MiniLM-L6-v2"), "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
