"""What each export costs and buys, on a finished run's model and eval set. Run by hand.

    python bench/export.py outputs/bench/runs/<stamp>_supervised          # every target
    python bench/export.py RUN_DIR --targets onnx_int8 --set onnx_int8.per_channel=false

The run's `model/` is exported again (through the stage cache under outputs/cache, so a second call
is quick), the torch model is scored on the run's `eval_set.json` as the reference, and every export
is scored paired against it and timed on the same passages in the same process: the same table a run
with `export=[...]` prints (the runner's own `export_all`), for a model trained earlier, e.g. by
`bench/quality.py --only supervised`. Rows are appended to outputs/bench/export.jsonl.

A new run does the same in one command: python -m runner logger=none 'export=[onnx,onnx_int8,static]'.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--targets", default="onnx,onnx_int8,openvino,openvino_int8,static")
    ap.add_argument("--set", action="append", default=[], help="TARGET.KNOB=VALUE, e.g. static.pca_dims=128")
    args = ap.parse_args()

    from runner.data.pairs import EmbeddingQAFinetuneDataset
    from omegaconf import OmegaConf

    from runner.data.eval_set import EvalSet
    from runner.infra.stage_cache import StageCache
    from runner.pipeline import evaluate_saved
    from runner.report.results import exports_table
    from runner.stages.export.exporting import export_all
    from runner.stages.export.schema import EXPORT

    results = json.loads((args.run_dir / "results.json").read_text())
    cfg = OmegaConf.create(results["config"])
    exports = {t: OmegaConf.structured(EXPORT[t]) for t in args.targets.split(",")}
    for item in args.set:
        key, value = item.split("=", 1)
        OmegaConf.update(exports, key, OmegaConf.create({"v": value}).v if value != "null" else None)
    cfg.export = OmegaConf.create(exports)
    qa = EmbeddingQAFinetuneDataset.from_json(str(args.run_dir / "eval_set.json"))
    eval_set = EvalSet(qa.queries, qa.corpus, qa.relevant_docs)
    model_dir = args.run_dir / "model"
    metric = cfg.optimized_metric.split("/", 1)[1]

    from sentence_transformers import SentenceTransformer

    start = time.perf_counter()
    torch_model = SentenceTransformer(str(model_dir), device="cpu")
    job = type("Job", (), {"cfg": cfg, "precision": "fp32", "device": "cpu"})()
    reference = evaluate_saved(job, torch_model, eval_set, model_dir)
    stages = StageCache(ROOT / "outputs" / "cache")
    out = ROOT / "outputs" / "bench" / "exports" / args.run_dir.name
    train = args.run_dir / "train_pairs.json"  # the run's training passages: int8 calibration data
    corpus = EmbeddingQAFinetuneDataset.from_json(str(train)).corpus if train.exists() else {}
    passages = [corpus[k] for k in sorted(corpus)]
    rows = export_all(cfg, stages, model_dir, reference, eval_set, metric, out, "cpu", passages)
    print(exports_table(rows, metric))
    for name, row in rows.items():
        if "llama_index" in row:
            print(f"{name}: {row['llama_index']}")
    record = {
        "run_dir": str(args.run_dir),
        "targets": args.targets,
        "set": args.set,
        "eval_queries": len(eval_set.answered_query_ids()),
        "precision": "fp32",
        "wall_s": round(time.perf_counter() - start, 1),
        "exports": rows,
    }
    (ROOT / "outputs" / "bench").mkdir(parents=True, exist_ok=True)
    with (ROOT / "outputs" / "bench" / "export.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
