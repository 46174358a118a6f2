"""The priors of the run's choices, and the tables they are measured from. Run by hand:

    python bench/priors.py tables outputs/bench/runs/<run> [<run> ...]   # -> outputs/bench/choices/<run>.json
    python bench/priors.py show outputs/bench/choices/*.json               # each candidate's difference, per benchmark
    python bench/priors.py write outputs/bench/choices/*.json              # -> runner/infra/prior_table.py

A choice table holds, for one finished run of `bench/quality.py` and one of its choices, every candidate's
per-question scores on the evidence the run decides that choice on (the training side for the window,
BM25's tokenisation and k1/b and the base hybrid's fusion; the dev split for the epoch, the merge weight and
the finetuned hybrid's weight) and on the run's eval set. The priors read only the evidence; the eval set's
rows are there for `bench/regret.py`, which judges each rule by the eval score of what it picks.
Every other setting stays as the run chose it (the k1/b grid at the run's tokenisation, the fusions over the
run's BM25 and window). The window's eval rows are the base model's at each window; the epochs' rows need
the run's saved epochs (`finetune.keep_epochs=true`).

`write`: for each choice and candidate, the mean over the benchmarks of its difference from the written
default on their evidence (each benchmark once, its precisions averaged), and the spread a new data set's
difference has around that mean (`prior_of`): by default the Student-t predictive spread of the benchmarks'
differences, which needs 4 benchmarks and is wide when they are few; `--spread normal`, the method-of-moments
spread (between-benchmark variance less sampling noise), which two benchmarks that happen to agree make
narrow. bench/regret.py measures both.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the project first; bench/ out of the path: its numbers.py would stand in for the standard library's numbers
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402

OUT = ROOT / "outputs" / "bench" / "choices"
TABLE = ROOT / "runner" / "infra" / "prior_table.py"
BEFORE = ("max_seq_length", "bm25", "bm25_params", "fusion_hybrid_base")  # decided on the training side
AFTER = ("epochs", "merge", "fusion_hybrid_finetuned")  # decided on the dev split


def read_sets(run: Path, cfg):
    """(the training side, the dev split, the eval set) the run had."""
    from runner.data.eval_set import EvalSet
    from runner.data.pairs import read_qa_dataset
    from runner.stages.evaluate.eval_sets import read_eval_set, training_side

    pairs = read_qa_dataset(run / "train_pairs.json", "train_pairs") if (run / "train_pairs.json").is_file() else None
    dev = None
    if (run / "dev_set.json").is_file():
        d = read_qa_dataset(run / "dev_set.json", "dev_set")
        dev = EvalSet(dict(d.queries), dict(d.corpus), dict(d.relevant_docs))
    if cfg.eval_set.kind in ("beir", "file"):
        eval_set = read_eval_set(cfg.eval_set, {})
    else:
        e = read_qa_dataset(run / "eval_set.json", "eval_set")
        eval_set = EvalSet(dict(e.queries), dict(e.corpus), dict(e.relevant_docs))
    return training_side(pairs, dev), dev, eval_set


class Scorer:
    """Per-question scores of dense and lexical rankings, each model's encoding of a set made once."""

    def __init__(self, metric: str, k: int, precision: str, batch_size: int):
        self.metric, self.k, self.precision, self.batch = metric, k, precision, batch_size
        self.rankings: dict = {}

    def dense(self, model, tag: str, name: str, eval_set):
        from runner.stages.evaluate.scoring import encode_set, ranking_of

        if (tag, name) not in self.rankings:
            t = time.perf_counter()
            self.rankings[tag, name] = ranking_of(encode_set(model, tag, eval_set, self.batch, self.precision), self.k)
            print(f"    encoded {name} with {tag} ({len(eval_set.corpus)} passages, {time.perf_counter() - t:.0f} s)", flush=True)
        return self.rankings[tag, name]

    def scores(self, ranking, eval_set) -> list[float]:
        from runner.stages.evaluate.choices import per_query

        return [round(float(x), 6) for x in per_query(ranking.ranked_ids(), eval_set, eval_set.answered_query_ids(), self.metric)]


def tables(run: Path, epochs_only: bool = False) -> dict:
    """Every choice's candidates with their per-question scores on the run's evidence and eval set
    (`epochs_only`: the epochs' alone, for runs made to measure them)."""
    from omegaconf import OmegaConf

    from runner.infra.models import load_model
    from runner.stages.evaluate.retrievers import depth

    results = json.loads((run / "results.json").read_text())
    cfg = OmegaConf.create(results["config"])
    side, dev, eval_set = read_sets(run, cfg)
    metric = cfg.optimized_metric.split("/", 1)[1]
    s = Scorer(metric, depth(cfg), results["precision"], cfg.evaluate.batch_size)
    base = OmegaConf.create(results["config"]["base_model"])
    base.max_seq_length = None
    model = load_model(base, "cpu")
    out = {
        "run": str(run),
        "benchmark": str(cfg.name).removeprefix("bench_"),
        "precision": results["precision"],
        "commit": _commit(run),
        "metric": metric,
        "choices": {},
    }
    choices, ctx = results["choices"], {}
    if epochs_only:
        _epochs(out["choices"], run, dev, eval_set, s)
        out["rows"] = {}
        return out
    if side is not None:
        _before(out["choices"], ctx, choices, cfg, model, side, eval_set, s)
    if dev is not None and "finetuned" in results["metrics"]:
        _after(out["choices"], ctx, choices, cfg, run, model, dev, eval_set, s)
    out["rows"] = _rows(ctx, choices, results, run, eval_set, s)
    return out


def _rows(ctx: dict, choices: dict, results: dict, run: Path, eval_set, s: Scorer) -> dict:
    """Each row the run scored, its per-question eval scores rebuilt as the run chose (for bench/paired.py,
    where the run's per_query.csv lacks them); each checked against the run's own score."""
    from runner.stages.evaluate.baselines import Fusion, fuse

    rows = {}
    if "base" in ctx:
        rows["base"] = s.scores(s.rankings[ctx["base"], "eval"], eval_set)
    if "lex_eval" in ctx:
        rows["bm25"] = s.scores(ctx["lex_eval"], eval_set)
        rows["hybrid_base"] = s.scores(
            fuse(s.rankings[ctx["base"], "eval"], ctx["lex_eval"], Fusion(**choices["fusion_hybrid_base"]["chosen"])), eval_set
        )
    if ("alpha 1", "eval") in s.rankings:
        rows["finetuned"] = s.scores(s.rankings["alpha 1", "eval"], eval_set)
        run_tag = ctx.get("run_tag", "alpha 1")
        if run_tag != "alpha 1":
            rows["merged"] = s.scores(s.rankings[run_tag, "eval"], eval_set)
        if "lex_eval" in ctx and "fusion_hybrid_finetuned" in choices:
            fusion = Fusion(**choices["fusion_hybrid_finetuned"]["chosen"])
            rows["hybrid_finetuned"] = s.scores(fuse(s.rankings[run_tag, "eval"], ctx["lex_eval"], fusion), eval_set)
    metric = s.metric
    for row, values in rows.items():
        reported = results["metrics"].get(row, {}).get(metric)
        mean = float(np.mean(values))
        flag = "" if reported is None or abs(mean - reported) < 1e-4 else "  (differs from the run's!)"
        print(f"    row {row}: {mean:.4f} rebuilt, {reported} reported{flag}", flush=True)
    return rows


def _entry(values, keys, default, side, evidence, eval_rows) -> dict:
    return {"values": values, "keys": keys, "default": default, "side": side, "evidence": evidence, "eval": eval_rows}


def _before(out: dict, ctx: dict, choices: dict, cfg, model, side, eval_set, s: Scorer) -> None:
    from runner.infra.priors import key
    from runner.stages.evaluate.baselines import Bm25, Bm25Settings, bm25_grid, bm25_params_grid, fuse, fusion_grid
    from runner.stages.evaluate.choices import _index
    from runner.stages.evaluate.retrievers import lexical_ranking
    from runner.stages.evaluate.schema import BM25_PARAMS_PRIOR, BM25_PRIOR, FUSION_PRIOR

    window = choices.get("max_seq_length", {})
    cands = [c["value"] for c in window.get("candidates", [])]
    if len(cands) > 1:
        ev, te = [], []
        for n in cands:
            model.max_seq_length = n
            ev.append(s.scores(s.dense(model, f"base@{n}", "side", side), side))
            te.append(s.scores(s.dense(model, f"base@{n}", "eval", eval_set), eval_set))
        default = cands.index(window["default"])
        out["max_seq_length"] = _entry(
            cands, [key("max_seq_length", cands, i, default) for i in range(len(cands))], default, "training side", ev, te
        )
        out["max_seq_length"]["longest_fits"] = default == len(cands) - 1
    model.max_seq_length = window.get("chosen") or model.max_seq_length
    ctx["base"] = f"base@{model.max_seq_length}"
    s.dense(model, ctx["base"], "eval", eval_set)
    b = cfg.evaluate.baselines
    if not b.enabled:
        return

    def lexical(grid, keys_of):
        values = [keys_of(g) for g in grid]
        ev = [s.scores(lexical_ranking(side, g, 10), side) for g in grid]
        te = [s.scores(lexical_ranking(eval_set, g, 10), eval_set) for g in grid]
        return values, ev, te

    grid = bm25_grid(b.language, b.stopwords, b.stemming)
    if len(grid) > 1:
        values, ev, te = lexical(grid, lambda g: {"stopwords": g.stopwords, "stemming": g.stemming})
        d = _index(values, BM25_PRIOR)
        out["bm25"] = _entry(values, [key("bm25", values, i, d) for i in range(len(values))], d, "training side", ev, te)
    tok = choices["bm25"]["chosen"] if "bm25" in choices else {"stopwords": True, "stemming": True}
    tokenisation = Bm25Settings(tok["stopwords"], tok["stemming"], b.language)
    grid = bm25_params_grid(tokenisation, b.k1, b.b)
    if len(grid) > 1:
        values, ev, te = lexical(grid, lambda g: g.as_dict())
        d = _index(values, BM25_PARAMS_PRIOR)
        out["bm25_params"] = _entry(
            values, [key("bm25_params", values, i, d) for i in range(len(values))], d, "training side", ev, te
        )
    chosen = Bm25Settings(**choices["bm25_params"]["chosen"]) if "bm25_params" in choices else tokenisation
    tag = f"base@{model.max_seq_length}"
    dense_side, dense_eval = s.dense(model, tag, "side", side), s.dense(model, tag, "eval", eval_set)
    queries = [side.queries[q] for q in side.answered_query_ids()]
    lex_side, lex_eval = Bm25(side.corpus, chosen).search(queries, s.k), lexical_ranking(eval_set, chosen, s.k)
    grid = fusion_grid(b.fusion_modes, b.top_k, b.dense_weights)
    values = [f.as_dict() for f in grid]
    d = _index(values, FUSION_PRIOR)
    ev = [s.scores(fuse(dense_side, lex_side, f), side) for f in grid]
    te = [s.scores(fuse(dense_eval, lex_eval, f), eval_set) for f in grid]
    out["fusion_hybrid_base"] = _entry(
        values, [key("fusion_hybrid_base", values, i, d) for i in range(len(values))], d, "training side", ev, te
    )
    ctx["bm25"], ctx["lex_eval"] = chosen, lex_eval


def _after(out: dict, ctx: dict, choices: dict, cfg, run: Path, model, dev, eval_set, s: Scorer) -> None:
    from sentence_transformers import SentenceTransformer

    from runner.infra.priors import key
    from runner.stages.evaluate.baselines import Fusion, fuse
    from runner.stages.evaluate.merge import interpolated
    from runner.stages.evaluate.retrievers import lexical_ranking

    _epochs(out, run, dev, eval_set, s)
    merge = choices.get("merge", {})
    tuned_dir = run / "finetuned_model" if (run / "finetuned_model").is_dir() else run / "model"
    tuned = SentenceTransformer(str(tuned_dir), device="cpu")
    s.dense(tuned, "alpha 1", "eval", eval_set)
    run_tag = "alpha 1"
    if "curve" in merge:
        base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        values = [1.0] + sorted((float(a) for a in cfg.merge.alphas), reverse=True)
        ev, te = [], []
        for a in values:
            m = tuned if a == 1.0 else interpolated(base_state, tuned, a)
            ev.append(s.scores(s.dense(m, f"alpha {a:g}", "dev", dev), dev))
            te.append(s.scores(s.dense(m, f"alpha {a:g}", "eval", eval_set), eval_set))
        out["merge"] = _entry(values, [key("merge", values, i, 0) for i in range(len(values))], 0, "dev split", ev, te)
        run_tag = f"alpha {float(merge['chosen']):g}"
    ctx["run_tag"] = run_tag
    weight = choices.get("fusion_hybrid_finetuned", {})
    if weight.get("questions") and "bm25" in ctx:
        if (run_tag, "dev") not in s.rankings:
            m = SentenceTransformer(str(run / "model"), device="cpu")
            s.dense(m, run_tag, "dev", dev), s.dense(m, run_tag, "eval", eval_set)
        lex_dev, lex_eval = lexical_ranking(dev, ctx["bm25"], s.k), ctx["lex_eval"]
        values = [c["value"] for c in weight["candidates"]]
        d = values.index(weight["default"])
        grid = [Fusion(**v) for v in values]
        ev = [s.scores(fuse(s.rankings[run_tag, "dev"], lex_dev, f), dev) for f in grid]
        te = [s.scores(fuse(s.rankings[run_tag, "eval"], lex_eval, f), eval_set) for f in grid]
        out["fusion_hybrid_finetuned"] = _entry(
            values, [key("fusion_hybrid_finetuned", values, i, d) for i in range(len(values))], d, "dev split", ev, te
        )


def _epochs(out: dict, run: Path, dev, eval_set, s: Scorer) -> None:
    """The epochs' table, from the run's saved epochs (finetune.keep_epochs=true)."""
    from sentence_transformers import SentenceTransformer

    from runner.infra.priors import key

    saved = run / "epochs"
    epochs = sorted((p for p in saved.glob("*") if p.is_dir()), key=lambda p: float(p.name)) if saved.is_dir() else []
    if len(epochs) < 2:
        return
    values = [float(p.name) for p in epochs]
    ev, te = [], []
    for p in epochs:
        m = SentenceTransformer(str(p), device="cpu")
        ev.append(s.scores(s.dense(m, f"epoch {p.name}", "dev", dev), dev))
        te.append(s.scores(s.dense(m, f"epoch {p.name}", "eval", eval_set), eval_set))
    d = len(values) - 1
    out["epochs"] = _entry(values, [key("epochs", values, i, d) for i in range(len(values))], d, "dev split", ev, te)


def _commit(where: Path = ROOT) -> str:
    """The commit of the checkout `where` lies in (a run dir: the tree that ran it)."""
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True)
    return done.stdout.strip() or "?"


def differences(tab: dict) -> dict:
    """{choice: {key: (mean difference from the default on the evidence, its standard error, questions)}}."""
    out = {}
    for name, c in tab["choices"].items():
        ev = np.asarray(c["evidence"], dtype=np.float64)
        n = ev.shape[1]
        diff = ev - ev[c["default"]]
        out[name] = {
            k: (float(diff[i].mean()), float(diff[i].std(ddof=1) / math.sqrt(n)) if n > 1 else math.inf, n)
            for i, k in enumerate(c["keys"])
        }
    return out


def by_benchmark(tabs: list[dict]) -> dict:
    """{benchmark: {choice: {key: (mean, se)}}}: each benchmark once, its precisions' differences averaged."""
    grouped: dict = {}
    for t in tabs:
        for name, keys in differences(t).items():
            for k, (m, se, _) in keys.items():
                grouped.setdefault(t["benchmark"], {}).setdefault(name, {}).setdefault(k, []).append((m, se))
    return {
        b: {
            name: {
                k: (float(np.mean([m for m, _ in v])), float(np.sqrt(np.mean([se**2 for _, se in v])))) for k, v in keys.items()
            }
            for name, keys in ch.items()
        }
        for b, ch in grouped.items()
    }


SPREADS = ("t", "normal")


def prior_of(measured: list[tuple[float, float]], spread: str = "t") -> tuple[float, float] | None:
    """(mean, spread) for a new data set from the benchmarks' (difference, standard error), or None.

    `t` (Student-t predictive): the spread of the benchmarks' own differences s, widened for a mean of B of them
    and for s itself resting on B points, sd^2 = s^2 (1 + 1/B) (B - 1) / (B - 3); with fewer than 4 benchmarks
    that variance is infinite: no prior. Two benchmarks that happen to agree say little about a third.
    `normal` (method of moments): the between-benchmark variance less their sampling noise (at least 0), plus
    the variance of the mean, sd^2 = tau^2 (1 + 1/B) + mean(se^2) / B; a prior from 2 benchmarks on."""
    d = np.array([m for m, _ in measured])
    se2 = np.array([se**2 for _, se in measured])
    b = len(d)
    if spread == "normal":
        if b < 2:
            return None
        tau2 = max(float(d.var(ddof=1) - se2.mean()), 0.0)
        return float(d.mean()), float(math.sqrt(tau2 * (1 + 1 / b) + se2.mean() / b))
    if b < 4:
        return None
    return float(d.mean()), float(math.sqrt(d.var(ddof=1) * (1 + 1 / b) * (b - 1) / (b - 3)))


def priors(per_benchmark: dict, leave_out: str | None = None, spread: str = "t") -> dict:
    """{choice: {key: [mean, spread]}} from every benchmark but `leave_out` (`prior_of`'s `spread`)."""
    pooled: dict = {}
    for b, ch in per_benchmark.items():
        if b == leave_out:
            continue
        for name, keys in ch.items():
            for k, v in keys.items():
                pooled.setdefault(name, {}).setdefault(k, []).append(v)
    out: dict = {}
    for name, keys in pooled.items():
        for k, measured in keys.items():
            p = prior_of(measured, spread)
            if p is not None:
                out.setdefault(name, {})[k] = [round(p[0], 5), round(p[1], 5)]
    return out


def write(tabs: list[dict], spread: str = "t") -> None:
    per_benchmark = by_benchmark(tabs)
    table = priors(per_benchmark, spread=spread)
    measured = {
        "date": time.strftime("%Y-%m-%d"),
        "commit": _commit(),
        "precisions": sorted({t["precision"] for t in tabs}),
        "spread": spread,
        **{
            name: {
                "benchmarks": sum(1 for ch in per_benchmark.values() if name in ch),
                "side": "training sides" if name in BEFORE else "dev splits",
            }
            for name in table
        },
    }
    names = ", ".join(sorted(per_benchmark))
    text = (
        '"""Written by `python bench/priors.py write` (do not edit by hand): per choice, {candidate: [mean, spread]}\n'
        "of its difference from the written default across the benchmarks (runner/infra/priors.py says how).\n"
        f"Benchmarks: {names}.\n"
        '"""\n\n'
        f"MEASURED: dict = {json.dumps(measured, indent=4)}\n\n"
        f"PRIORS: dict = {json.dumps(table, indent=4)}\n"
    )
    tmp = TABLE.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(TABLE)
    subprocess.run([sys.executable, "-m", "ruff", "format", "-q", str(TABLE)], cwd=ROOT, check=False)
    print(f"{TABLE}: {sum(len(v) for v in table.values())} candidates' priors over {len(table)} choices from {names}")


def show(tabs: list[dict], spread: str = "t") -> None:
    per_benchmark = by_benchmark(tabs)
    table = priors(per_benchmark, spread=spread)
    names = sorted(per_benchmark)
    for choice in (*BEFORE, *AFTER):
        keys = sorted(
            {k for ch in per_benchmark.values() for k in ch.get(choice, {})}, key=lambda k: -table.get(choice, {}).get(k, [-9])[0]
        )
        if not keys:
            continue
        print(f"\n{choice}: difference from the written default on the evidence (se), per benchmark; the prior")
        print(f"  {'candidate':34} " + " ".join(f"{b:>17}" for b in names) + f" {'prior':>17}")
        for k in keys[:12]:
            cells = []
            for b in names:
                v = per_benchmark[b].get(choice, {}).get(k)
                cells.append(f"{v[0]:+.4f} ({v[1]:.4f})" if v else "-")
            p = table.get(choice, {}).get(k)
            print(f"  {k:34} " + " ".join(f"{c:>17}" for c in cells) + f" {(f'{p[0]:+.4f} ± {p[1]:.4f}' if p else '-'):>17}")


def load(paths: list[Path]) -> list[dict]:
    return [json.loads(p.read_text()) for p in paths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["tables", "show", "write"])
    ap.add_argument("paths", nargs="+", type=Path)
    ap.add_argument("--epochs-only", action="store_true", help="tables: only the epochs' (runs made to measure them)")
    ap.add_argument("--spread", choices=SPREADS, default="t", help="show / write: the priors' spread (prior_of)")
    a = ap.parse_args()
    if a.command == "tables":
        OUT.mkdir(parents=True, exist_ok=True)
        for run in a.paths:
            start = time.perf_counter()
            print(f"{run}:", flush=True)
            t = tables(run, a.epochs_only)
            path = OUT / f"{run.name}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(t))
            tmp.replace(path)
            print(f"  {', '.join(t['choices'])} -> {path} ({time.perf_counter() - start:.0f} s)")
    elif a.command == "show":
        show(load(a.paths), a.spread)
    else:
        write(load(a.paths), a.spread)


if __name__ == "__main__":
    main()
