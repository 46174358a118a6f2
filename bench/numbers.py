"""The numbers the README and docs/ quote, kept in one place: docs/numbers.json.

    python bench/numbers.py add default_run RUN_DIR [--wall S]   # a finished default run (python -m runner ...)
    python bench/numbers.py add bench RUN_DIR... [--jsonl FILE]    # finished bench/quality.py runs, one entry each
    python bench/numbers.py render                                 # rewrite every numbers block from numbers.json

Each entry keeps its date, commit, machine (CPU, cores, bf16 / AMX / VNNI) and precision beside the numbers.
README.md and docs/*.md show measured numbers only inside blocks that `render` writes:

    <!-- numbers:NAME -->
    ...
    <!-- /numbers:NAME -->

and `tests/test_docs_numbers.py` fails when a block differs from what `render` makes of numbers.json, or when
a metric (0.xxx) stands outside a block in the README or a reference page. docs/record.md, the dated record
of measurements, is history and quotes what it likes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/ off the path: this file is named numbers, and numpy imports the standard library's numbers
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from runner.data.rows import SHOWN as ROWS  # noqa: E402
from runner.infra.atomic import write_text_atomic  # noqa: E402
from runner.infra.models import cpu_flags, cpu_has_native_bf16, cpu_name  # noqa: E402

NUMBERS = ROOT / "docs" / "numbers.json"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RECORD = ROOT / "docs" / "record.md"
BLOCK = re.compile(r"<!-- numbers:([\w-]+) -->(.*?)<!-- /numbers:\1 -->", re.S)


def machine() -> dict:
    """This machine's CPU, as far as a timing depends on it."""
    flags = cpu_flags()
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "bf16": cpu_has_native_bf16(),
        "amx": "amx_tile" in flags,
        "vnni": bool(flags & {"avx512_vnni", "avx_vnni"}),
    }


def _command(run_dir: Path) -> str:
    overrides = run_dir / ".hydra" / "overrides.yaml"
    given = []
    if overrides.exists():
        given = [line.removeprefix("- ").strip() for line in overrides.read_text().splitlines() if line.startswith("- ")]
    keep = [o for o in given if not o.startswith(("hydra.run.dir=", "name=bench_"))]
    return " ".join(["python -m runner", *keep])


def entry(run_dir: Path, wall_s: float | None = None) -> dict:
    """What the docs quote of one finished run."""
    r = json.loads((run_dir / "results.json").read_text())
    m = r["metrics"]
    commit = subprocess.run(
        ["git", "-C", str(run_dir), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = {}
    for row in ROWS:
        if row in m:
            rows[row] = {k: m[row][k] for k in ("ndcg@10", "hit_rate@10", "mrr@10")}
            if row in m.get("vs_verdict", {}):
                rows[row]["vs_verdict"] = m["vs_verdict"][row]
    choices = {
        name: {
            "chosen": c.get("chosen"),
            "decided_by": c.get("decided_by"),
            "questions": c.get("questions"),
            "stability": c.get("stability"),
            "expected": next((x.get("expected") for x in c.get("candidates", []) if x.get("value") == c.get("chosen")), None),
        }
        for name, c in r.get("choices", {}).items()
        if isinstance(c, dict) and "decided_by" in c
    }
    return {
        "date": datetime.fromtimestamp((run_dir / "results.json").stat().st_mtime).strftime("%Y-%m-%d"),
        "commit": commit or "unknown",
        "machine": machine(),
        "precision": r["precision"],
        "device": r.get("device"),
        "command": _command(run_dir),
        "counts": {k: r["counts"].get(k) for k in ("documents", "chunks", "train_pairs", "dev_queries", "eval_queries")},
        "finetune_s": r["timings_s"].get("finetune"),
        "wall_s": wall_s,
        "verdict": r["verdict"]["deploy"],
        "rows": rows,
        "delta": {
            k: {
                "base": m["base"][k],
                "finetuned": m["finetuned"][k],
                "delta": m["delta"][k],
                "ci95": m["delta_ci95"][k],
                "p": m["delta_p"][k],
            }
            for k in ("hit_rate@1", "mrr@10", "ndcg@10")
        },
        "choices": choices,
    }


def chunk_stats(run_dir: Path) -> dict | None:
    """How the built-in corpus's chunks of the run's chunk_size (tiktoken tokens) fit the window before
    `fit_window` splits them again: how many chunks, how many run past the window, the longest and the 95th
    percentile, in the model's word pieces (what docs/options.md quotes). None for a run that names no window."""
    from transformers import AutoTokenizer

    from runner.stages.chunk.chunking import build_parser, chunk_documents
    from runner.stages.load.corpus import load_python_docs
    from runner.stages.ship.portable import local_chunker

    spec = json.loads((run_dir / "retriever.json").read_text())
    chunker = local_chunker(spec["chunker"], run_dir)
    cap = chunker.get("fit_window")
    if not cap:
        return None
    tokenizer = AutoTokenizer.from_pretrained(cap["tokenizer"]["name_or_path"])
    first = {k: v for k, v in chunker.items() if k != "fit_window"}
    nodes = chunk_documents(load_python_docs().documents, build_parser(first))
    lengths = sorted(len(tokenizer(n.get_content(), add_special_tokens=True, verbose=False)["input_ids"]) for n in nodes)
    window = spec["max_seq_length"]
    return {
        "chunk_size": first["chunk_size"],
        "chunks": len(lengths),
        "window": window,
        "over_window": sum(1 for x in lengths if x > window),
        "longest": lengths[-1],
        "p95": lengths[int(0.95 * (len(lengths) - 1))],
    }


# rendering: each block NAME is made by RENDER[NAME](numbers, NAME)


def _cpu(mc: dict) -> str:
    kinds = ", ".join(k for k in ("bf16", "amx", "vnni") if mc.get(k)) or "no bf16, AMX or VNNI"
    return f"{mc['cpu']} ({mc['cores']} cores; {kinds})"


def _where(e: dict) -> str:
    cpu = _cpu(e["machine"])
    return f"{e['precision']} on {e['device'] or 'cpu'}, {cpu}, {e['date']}, commit {e['commit']}"


def _ci(c: dict) -> str:
    return f"{c['delta']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]"


def render_default_run(numbers: dict, name: str) -> str:
    e = numbers["default_run"]
    c = e["counts"]
    lines = [
        "",
        "| retriever | nDCG@10 | hit rate@10 | MRR@10 | vs. the verdict's row [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for row, v in e["rows"].items():
        vs = _ci(v["vs_verdict"]) if "vs_verdict" in v else "**shipped**"
        lines.append(f"| {row} | {v['ndcg@10']:.4f} | {v['hit_rate@10']:.4f} | {v['mrr@10']:.4f} | {vs} |")
    d = e["delta"]["ndcg@10"]
    wall = f", the whole run {e['wall_s']:.0f} s" if e.get("wall_s") else ""
    lines += [
        "",
        f"Finetuned - base nDCG@10: {_ci(d)}, p {d['p']:.3f}. Verdict: **{e['verdict']}**. {c['eval_queries']} eval "
        f"questions from held-out documents, {c['train_pairs']} training pairs, {c['dev_queries']} dev questions, "
        f"{c['chunks']} chunks of {c['documents']} documents; training {e['finetune_s']:.0f} s{wall}. "
        f"`{e['command']}`, {_where(e)}.",
        "",
    ]
    return "\n".join(lines)


def render_default_pairs(numbers: dict, name: str) -> str:
    return str(numbers["default_run"]["counts"]["train_pairs"])


def render_default_chunks(numbers: dict, name: str) -> str:
    c = numbers["default_run"]["chunking"]
    return (
        f"{c['over_window']} of the built-in corpus's {c['chunks']} chunks of {c['chunk_size']} tiktoken tokens ran past "
        f"MiniLM's {c['window']} (the longest {c['longest']}; the 95th percentile {c['p95']} word pieces)"
    )


def render_default_time(numbers: dict, name: str) -> str:
    e = numbers["default_run"]
    return f"{e['wall_s'] / 60:.1f} min ({e['precision']}, {e['machine']['cores']} cores)"


def render_bench(numbers: dict, name: str) -> str:
    lines = [
        "",
        "| benchmark | precision | base -> finetuned (delta [95% CI]) | bm25 | hybrid_base | hybrid_finetuned | verdict "
        "| pairs / dev / eval questions | training s | measured |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, e in sorted(numbers.get("bench", {}).items()):
        d, rows, c = e["delta"]["ndcg@10"], e["rows"], e["counts"]
        cells = [f"{rows[r]['ndcg@10']:.4f}" if r in rows else "—" for r in ("bm25", "hybrid_base", "hybrid_finetuned")]
        lines.append(
            f"| {key.split('/')[0]} | {e['precision']} | {d['base']:.4f} -> {d['finetuned']:.4f} ({_ci(d)}) | "
            f"{' | '.join(cells)} | **{e['verdict']}** | {c['train_pairs']} / {c['dev_queries']} / {c['eval_queries']} | "
            f"{e['finetune_s']:.0f} | {e['date']}, {e['commit']}, {_cpu(e['machine'])} |"
        )
    return "\n".join([*lines, ""])


def _value(v) -> str:
    return ", ".join(f"{k} {x}" for k, x in v.items()) if isinstance(v, dict) else str(v)


def render_choices(numbers: dict, name: str) -> str:
    e = numbers["default_run"]
    lines = ["", "| choice | chosen | by | questions | expected | stability |", "|---|---|---|---|---|---|"]
    for choice, c in e["choices"].items():
        stability = f"{c['stability']:.0%}" if c.get("stability") is not None else "—"
        expected = f"{c['expected']:.4f}" if c.get("expected") is not None else "—"
        lines.append(f"| {choice} | {_value(c['chosen'])} | {c['decided_by']} | {c['questions']} | {expected} | {stability} |")
    return "\n".join([*lines, "", f"`{e['command']}`, {_where(e)}.", ""])


RENDER = {
    "choices": render_choices,
    "default_run": render_default_run,
    "default_time": render_default_time,
    "default_pairs": render_default_pairs,
    "default_chunks": render_default_chunks,
    "bench": render_bench,
}


def rendered(text: str, numbers: dict) -> str:
    """`text` with every numbers block rewritten from `numbers`."""
    return BLOCK.sub(lambda b: f"<!-- numbers:{b[1]} -->{RENDER[b[1]](numbers, b[1])}<!-- /numbers:{b[1]} -->", text)


def load() -> dict:
    return json.loads(NUMBERS.read_text()) if NUMBERS.exists() else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    add = sub.add_parser("add", help="record finished runs in docs/numbers.json, then render")
    add.add_argument("kind", choices=["default_run", "bench"])
    add.add_argument("runs", nargs="+", type=Path)
    add.add_argument("--wall", type=float, help="the default run's wall time in seconds, as timed outside it")
    add.add_argument(
        "--jsonl", type=Path, default=ROOT / "outputs" / "bench" / "quality.jsonl", help="bench/quality.py's rows (wall times)"
    )
    sub.add_parser("render", help="rewrite the numbers blocks of README.md and docs/*.md")
    a = ap.parse_args()
    numbers = load()
    if a.what == "add":
        if a.kind == "default_run":
            numbers["default_run"] = {**entry(a.runs[0], a.wall), "chunking": chunk_stats(a.runs[0])}
        else:
            walls = {}
            if a.jsonl.exists():
                walls = {
                    str(Path(r["run_dir"]).resolve()): r.get("wall_s")
                    for r in map(json.loads, a.jsonl.read_text().splitlines())
                    if "run_dir" in r
                }
            for run_dir in a.runs:
                e = entry(run_dir, walls.get(str(run_dir.resolve())))
                bench = run_dir.name.rsplit("_", 1)[-1]
                numbers.setdefault("bench", {})[f"{bench}/{e['precision']}"] = e
        write_text_atomic(json.dumps(numbers, indent=1) + "\n", NUMBERS)  # in the runs' order, as rendered
    for page in PAGES:
        text = page.read_text()
        new = rendered(text, numbers)
        if new != text:
            write_text_atomic(new, page)
            print(f"rendered {page.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
