"""The GPU check's report: the numbers of scripts/gpu_check.sh's runs, as report.md and report.json.

python scripts/gpu_report.py OUT      # OUT: the folder gpu_check.sh wrote (default/, sweep/)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def collect(out: Path) -> dict:
    runs = []
    for path in sorted(out.glob("default/results.json")) + sorted(out.glob("sweep/*/results.json")):
        r = json.loads(path.read_text())
        m = r["metrics"]
        runs.append(
            {
                "run": str(path.parent.relative_to(out)),
                "learning_rate": r["config"]["finetune"].get("learning_rate"),
                "device": r["device"],
                "precision": r["precision"],
                "gpu": r.get("gpu", {}).get("name"),
                "peak_gpu_memory_gib": r.get("gpu", {}).get("peak_memory_gib"),
                **r.get("throughput", {}),
                "timings_s": r["timings_s"],
                "base_ndcg@10": m["base"].get("ndcg@10"),
                "finetuned_ndcg@10": m.get("finetuned", {}).get("ndcg@10"),
                "delta_ndcg@10": m.get("delta", {}).get("ndcg@10"),
                "delta_ci95": m.get("delta_ci95", {}).get("ndcg@10"),
            }
        )
    wall = {p.stem: float(p.read_text()) for p in out.glob("wall_*.txt")}
    return {"runs": runs, "wall_s": wall}


def markdown(report: dict) -> str:
    lines = [
        "| run | lr | device | precision | train pairs/s | encode texts/s | peak GPU GiB | "
        "finetune s | base nDCG@10 | finetuned | delta [95% CI] |",
        "|" + "---|" * 11,
    ]
    for r in report["runs"]:
        ci = r["delta_ci95"] or [float("nan")] * 2
        lines.append(
            f"| {r['run']} | {r['learning_rate']} | {r['device']} | {r['precision']} | {r.get('train_pairs_per_s')} | "
            f"{r.get('encode_texts_per_s')} | {r['peak_gpu_memory_gib']} | {r['timings_s'].get('finetune')} | "
            f"{r['base_ndcg@10']:.4f} | {(r['finetuned_ndcg@10'] or float('nan')):.4f} | "
            f"{(r['delta_ndcg@10'] or 0):+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}] |"
        )
    if report["runs"]:
        stages = report["runs"][0]["timings_s"]
        lines += ["", "Wall time per stage, default run (s): " + ", ".join(f"{k} {v}" for k, v in stages.items())]
    if report["wall_s"]:
        lines += [
            "",
            "Wall time per step of the check (s): "
            + ", ".join(f"{k.removeprefix('wall_')} {v:.0f}" for k, v in report["wall_s"].items()),
        ]
    return "\n".join(lines) + "\n"


def main(out: str) -> None:
    folder = Path(out)
    report = collect(folder)
    if not report["runs"]:
        sys.exit(f"no results.json under {folder}/default or {folder}/sweep: did the runs fail? See gpu_check.log.")
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    (folder / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "outputs/gpu_check")
