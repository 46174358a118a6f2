"""Retrieval quality on three benchmarks, one table. Run by hand; SciFact comes from ../shared/data.

    python bench/quality.py                          # the current defaults, reported on SciFact test
    python bench/quality.py --split dev              # for choosing: SciFact train carved into fit / dev
    python bench/quality.py --only supervised -- precision=bf16 finetune.learning_rate=1e-4
                                                     # a recipe: runner overrides for every benchmark
    python bench/quality.py --make-dev               # only the fit/dev folder the experiment=tune_* grids use

Benchmarks (all-MiniLM-L6-v2 unless the overrides say otherwise):
  supervised  train on SciFact's train judgements (qa_generator=file on the BEIR folder), evaluate on
              test. --split dev: train on 80% of the train queries (fit), evaluate on the other 20% (dev).
  offline     no human labels: the first --offline-docs documents of SciFact's corpus, chunked, ICT
              pairs, finetune; evaluate on test (--split dev: on all train queries).
  builtin     the default run: corpus=python_docs, held-out questions (the same in both modes).
  long        the built-in run with 1,024-token chunks (chunker.chunk_size=1024, no overlap) and five
              ICT questions per chunk (164 chunks): long passages, as in filings or reports, for the
              choices that depend on passage length.
  vim         Vim's user manual (the 36 usr_*.txt files of Debian's vim-runtime, copied to
              outputs/bench/vim): plain-text help pages, corpus=directory, held-out ICT questions.
  readmes     the README (the long description in METADATA) of every package in the venv whose text runs
              3-40 KB (outputs/bench/readmes, one .md each): markdown about software, corpus=directory,
              held-out ICT questions.
              long, vim and readmes are not in the default --only list; ask for them: --only long,vim,readmes.
              vim and readmes are built from this machine's files: text the team did not pick.
For each: base and finetuned nDCG@10, the delta with its 95% paired BCa interval and randomization p,
training pairs, training wall time, and the run's whole wall time; then every choice the run made (what
it chose, on how many questions, how stably, by the evidence or the written default) and every retriever
the run scored (merged, BM25, the hybrids) against the verdict's. Rows are appended, with the
command line, to outputs/bench/quality.jsonl. Runs share the stage cache under outputs/, so the
base model's evaluation of a split is computed once.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "scifact"


def dev_folder(data: Path, out: Path, fraction: float = 0.2, seed: int = 0, small: int = 200) -> Path:
    """A BEIR folder beside `out` with SciFact's corpus and queries and three new qrels: fit.tsv and
    dev.tsv, a seeded split of the train queries (the test judgements are not touched), and
    fit<small>.tsv, a seeded sample of `small` fit queries (training on few pairs)."""
    folder = out / "scifact_dev"
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        link = folder / name
        if not link.exists():
            link.symlink_to((data / name).resolve())
    lines = (data / "qrels" / "train.tsv").read_text().splitlines()
    header, rows = lines[0], [line for line in lines[1:] if line.strip()]
    queries = sorted({r.split("\t")[0] for r in rows})
    dev = set(random.Random(seed).sample(queries, round(fraction * len(queries))))
    fit = [q for q in queries if q not in dev]
    few = set(random.Random(seed).sample(fit, min(small, len(fit))))
    for name, keep in (("fit", lambda q: q not in dev), ("dev", lambda q: q in dev), (f"fit{small}", lambda q: q in few)):
        text = "\n".join([header, *(r for r in rows if keep(r.split("\t")[0]))]) + "\n"
        path = folder / "qrels" / f"{name}.tsv"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return folder


VIM_DOCS = Path("/usr/share/vim/vim90/doc")


def text_folder(name: str, out: Path) -> Path | None:
    """outputs/bench/<name>: the vim or readmes corpus, written once from this machine's files; None where
    the machine lacks them (no vim runtime)."""
    folder = out / name
    if name == "vim":
        files = sorted(VIM_DOCS.glob("usr_*.txt"))
        texts = {f.name: f.read_text(encoding="utf-8", errors="replace") for f in files}
    else:
        import importlib.metadata as md

        texts = {}
        for dist in md.distributions():
            body = dist.metadata.get_payload() if dist.metadata else ""  # the long description
            if body and 3000 <= len(body.encode()) <= 40000:
                texts[f"{dist.metadata['Name'].lower()}.md"] = body
    if not texts:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    for file, text in texts.items():
        path = folder / file
        if not path.is_file() or path.read_text(encoding="utf-8", errors="replace") != text:
            path.write_text(text, encoding="utf-8")
    return folder


def benchmarks(split: str, data: Path, out: Path, offline_docs: int) -> dict[str, list[str]]:
    folders = {name: text_folder(name, out) for name in ("vim", "readmes")}
    if split == "dev":
        beir, train, evaluate, offline_eval = dev_folder(data, out), "fit", "dev", "train"
    else:
        beir, train, evaluate, offline_eval = data, "train", "test", "test"
    return {
        "supervised": [
            "qa_generator=file",
            f"qa_generator.path={beir}",
            f"qa_generator.split={train}",
            "eval_set=beir",
            f"eval_set.path={beir}",
            f"eval_set.split={evaluate}",
        ],
        "offline": [
            "corpus=beir",
            f"corpus.path={data}",
            f"corpus.max_documents={offline_docs}",
            "eval_set=beir",
            f"eval_set.path={data}",
            f"eval_set.split={offline_eval}",
        ],
        "builtin": [],
        "long": [
            "chunker.chunk_size=1024",
            "chunker.fit_window=false",
            "chunker.chunk_overlap=0",
            "qa_generator.num_questions_per_chunk=5",
        ],
        **{name: ["corpus=directory", f"corpus.path={folder}"] for name, folder in folders.items() if folder},
    }


def run(name: str, args: list[str], recipe: list[str], out: Path) -> dict:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = out / "runs" / f"{stamp}_{name}"
    cmd = [sys.executable, "-m", "runner", *args, *recipe, "logger=none", f"name=bench_{name}", f"hydra.run.dir={run_dir}"]
    print(f"[{name}] {' '.join(cmd[2:])}", flush=True)
    start = time.perf_counter()
    done = subprocess.run(
        cmd, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
        return {"benchmark": name, "failed": True, "run_dir": str(run_dir)}
    r = json.loads((run_dir / "results.json").read_text())
    m = r["metrics"]
    choices = r.get("choices", {})
    return {
        "benchmark": name,
        "base": m["base"]["ndcg@10"],
        "finetuned": m["finetuned"]["ndcg@10"],
        "delta": m["delta"]["ndcg@10"],
        "ci95": m["delta_ci95"]["ndcg@10"],
        "p": m["delta_p"]["ndcg@10"],
        "train_pairs": r["counts"].get("train_pairs"),
        "eval_queries": r["counts"]["eval_queries"],
        "dev_queries": r["counts"].get("dev_queries"),
        "finetune_s": r["timings_s"].get("finetune"),
        "wall_s": round(wall, 1),
        "precision": r["precision"],
        "rows": {row: m[row]["ndcg@10"] for row in ROWS if row in m},
        "vs_verdict": m.get("vs_verdict", {}),
        "verdict": r.get("verdict", {}).get("deploy"),
        "bm25": choices.get("bm25_params", choices.get("bm25", {})).get("chosen"),
        "merge": choices.get("merge", {}).get("chosen", choices.get("merge", {}).get("chosen_alpha")),
        "fusion": {k.removeprefix("fusion_"): v.get("chosen") for k, v in choices.items() if k.startswith("fusion_")},
        "choices": {
            name: {k: v.get(k) for k in ("chosen", "questions", "stability", "decided_by", "margin", "margin_ci95")}
            for name, v in choices.items()
            if isinstance(v, dict) and "decided_by" in v
        },
        "window": choices.get("max_seq_length", {}).get("chosen"),
        "train_steps": choices.get("time_budget", {}).get("chosen"),
        "run_dir": str(run_dir),
    }


ROWS = ("base", "finetuned", "merged", "bm25", "hybrid_base", "hybrid_finetuned")


def shipping(rows: list[dict]) -> str:
    """Per benchmark: every retriever's nDCG@10 with its interval against the verdict's, the dev choices."""
    lines = []
    for r in rows:
        if r.get("failed") or "rows" not in r:
            continue
        lines.append(
            f"\n{r['benchmark']}: verdict {r['verdict']}; window {r.get('window')}; BM25 {r['bm25']}; merge alpha {r['merge']}; "
            f"fusion {r['fusion']}; {r['dev_queries']} dev queries; trained {r.get('train_steps')}"
        )
        for name, c in r.get("choices", {}).items():
            stab = f"{c['stability']:.0%}" if c.get("stability") is not None else "-"
            margin = (
                f"{c['margin']:+.4f} [{c['margin_ci95'][0]:+.4f}, {c['margin_ci95'][1]:+.4f}]" if c.get("margin_ci95") else ""
            )
            lines.append(
                f"  choice {name}: {c['chosen']} by {c['decided_by']}, {c['questions']} questions, stability {stab}, "
                f"margin over the runner-up {margin}"
            )
        lines.append(f"  {'retriever':17} {'nDCG@10':>8} {'vs verdict':>11} {'95% CI':>18} {'p':>6}")
        for row, score in r["rows"].items():
            c = r["vs_verdict"].get(row)
            vs = f"{c['delta']:+11.4f} {'[%+.4f, %+.4f]' % tuple(c['ci95']):>18} {c['p']:6.3f}" if c else f"{'(shipped)':>11}"
            lines.append(f"  {row:17} {score:8.4f} {vs}")
    return "\n".join(lines)


def table(rows: list[dict]) -> str:
    lines = [
        f"{'benchmark':11} {'base':>7} {'tuned':>7} {'delta':>8} {'95% CI':>18} {'p':>6} {'pairs':>6} "
        f"{'queries':>7} {'train s':>8} {'wall s':>7}"
    ]
    for r in rows:
        if r.get("failed"):
            lines.append(f"{r['benchmark']:11} FAILED, see {r['run_dir']}/run.log")
            continue
        ci = f"[{r['ci95'][0]:+.4f}, {r['ci95'][1]:+.4f}]"
        lines.append(
            f"{r['benchmark']:11} {r['base']:7.4f} {r['finetuned']:7.4f} {r['delta']:+8.4f} {ci:>18} "
            f"{r['p']:6.3f} {r['train_pairs']:6d} {r['eval_queries']:7d} {r['finetune_s']:8.1f} "
            f"{r['wall_s']:7.1f}"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", choices=["test", "dev"], default="test")
    ap.add_argument("--only", default="supervised,offline,builtin", help="comma-separated benchmarks")
    ap.add_argument("--data", type=Path, default=DATA, help="SciFact in the BEIR layout")
    ap.add_argument("--offline-docs", type=int, default=600, help="SciFact documents the offline benchmark trains on")
    ap.add_argument(
        "--make-dev",
        action="store_true",
        help="only write outputs/bench/scifact_dev (fit/dev qrels) for the experiment=tune_* sweeps",
    )
    ap.add_argument("recipe", nargs="*", help="runner overrides after --, applied to every benchmark")
    a = ap.parse_args()
    if not (a.data / "corpus.jsonl").is_file():
        sys.exit(f"--data {a.data} holds no corpus.jsonl; give the SciFact folder (BEIR layout).")
    out = ROOT / "outputs" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    if a.make_dev:
        print(dev_folder(a.data, out))
        return
    chosen = benchmarks(a.split, a.data, out, a.offline_docs)
    names = a.only.split(",")
    unknown = set(names) - set(chosen)
    if unknown:
        sys.exit(f"--only {a.only}: unknown benchmark(s) {sorted(unknown)}; choose from {sorted(chosen)}.")
    rows = []
    for name in names:
        rows.append(run(name, chosen[name], a.recipe, out))
        with (out / "quality.jsonl").open("a") as f:
            f.write(json.dumps({"split": a.split, "recipe": a.recipe, "offline_docs": a.offline_docs, **rows[-1]}) + "\n")
    print(f"\nsplit={a.split} recipe={' '.join(a.recipe) or '(defaults)'}\n{table(rows)}\n{shipping(rows)}")


if __name__ == "__main__":
    main()
