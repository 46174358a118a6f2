"""Which rule should make a run's choices: each rule's regret on every benchmark's eval set. Run by hand:

    python bench/priors.py tables outputs/bench/runs/<run> ...      # the choice tables, once per run
    python bench/regret.py outputs/bench/choices/*.json             # the regret table
    python bench/regret.py --markdown outputs/bench/choices/*.json  # the same, for docs/record.md

For every benchmark run and every choice it made, each rule picks a candidate from the run's evidence (the
training side before training, the dev split after; never the eval set), and the pick is scored on the
benchmark's eval set, where every candidate was scored too (this evaluates the rule, as bench/priors.py
measures the priors; no run ever reads its eval set). Regret = the best candidate's eval score in hindsight
less the pick's. The rules:

  test      (the rule until 2026-12-07) the evidence's best replaces the written default only when its
            paired 95% BCa interval over the default lies above 0
  argmax    the evidence's best, whatever its margin
  default   the written default, always (the prior alone)
  expected  the highest expected score: the evidence and the prior combined by their precision
            (runner/infra/choosing.py); the prior leaves the judged benchmark out (it is measured on the
            others' evidence: a benchmark the priors never saw, as a user's data is), its spread the Student-t
            predictive one (bench/priors.py prior_of, `t`)
  expected_normal  the same with the method-of-moments spread (`normal`): narrow where a few benchmarks agree
  expected_own  `expected` with the prior measured on every benchmark, the judged one included (what the
            shipped priors do on the team's own benchmarks: optimistic)

Where the window's default is shorter than the longest because only it fits the time budget with the mined
negatives, the longer windows carry the negatives' cost (runner.infra.priors.NEGATIVE_WORTH) in the expected
rule and in their eval scores alike: their eval rows are the base model's, which trains no negatives.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import numpy as np  # noqa: E402

_spec = importlib.util.spec_from_file_location("bench_priors", ROOT / "bench" / "priors.py")
priors_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(priors_bench)

RULES = ("test", "argmax", "default", "expected", "expected_normal", "expected_own")
ORDER = (*priors_bench.BEFORE, *priors_bench.AFTER)


def _costs(name: str, c: dict) -> np.ndarray:
    """The known cost of each candidate (the window's lost negatives), else zeros."""
    from runner.stages.evaluate.seq_length import negatives_lost

    if name == "max_seq_length" and not c.get("longest_fits", True):
        return np.asarray(negatives_lost(c["values"], c["default"]))
    return np.zeros(len(c["values"]))


def picks(name: str, c: dict, tables: dict, n_resamples: int) -> dict[str, int]:
    """Each rule's pick (a candidate index) from the choice's evidence."""
    from runner.infra.choosing import best_of, estimates, pick, preference
    from runner.infra.metrics import paired_bootstrap_ci
    from runner.infra.priors import priors_for

    ev = np.asarray(c["evidence"], dtype=np.float64)
    d = c["default"]
    order = preference(len(ev), d)
    best = best_of(ev.mean(axis=1), order)
    out = {"argmax": best, "default": d}
    low = paired_bootstrap_ci(ev[d], ev[best], n_resamples, 0)[0] if best != d else 0.0
    out["test"] = best if best != d and low > 0 else d
    costs = _costs(name, c)
    for rule, tab in tables.items():  # the expected-score rules, each with its prior table
        pri = priors_for(name, c["values"], d, table=(tab or {}).get(name, {}))
        out[rule] = pick(estimates(ev, d, pri, costs)["expected"], d)
    return out


def regrets(tabs: list[dict], n_resamples: int) -> list[dict]:
    """One row per (run, choice): each rule's pick, its eval score and its regret."""
    per_benchmark = priors_bench.by_benchmark(tabs)
    own = priors_bench.priors(per_benchmark)
    rows = []
    for t in tabs:
        tables = {
            "expected": priors_bench.priors(per_benchmark, leave_out=t["benchmark"]),
            "expected_normal": priors_bench.priors(per_benchmark, leave_out=t["benchmark"], spread="normal"),
            "expected_own": own,
        }
        for name in ORDER:
            c = t["choices"].get(name)
            if c is None:
                continue
            truth = np.asarray(c["eval"], dtype=np.float64).mean(axis=1) + _costs(name, c)
            chosen = picks(name, c, tables, n_resamples)
            rows.append(
                {
                    "benchmark": t["benchmark"],
                    "precision": t["precision"],
                    "choice": name,
                    "candidates": len(c["values"]),
                    "questions": len(c["evidence"][0]),
                    "best": c["keys"][int(np.argmax(truth))],
                    "best_eval": float(truth.max()),
                    **{f"{r}_pick": c["keys"][chosen[r]] for r in RULES},
                    **{f"{r}_eval": float(truth[chosen[r]]) for r in RULES},
                    **{f"{r}_regret": float(truth.max() - truth[chosen[r]]) for r in RULES},
                }
            )
    return rows


def text_table(rows: list[dict]) -> str:
    head = f"{'benchmark':11} {'prec':5} {'choice':24} {'n':>5} {'best (eval)':>30} " + " ".join(f"{r:>22}" for r in RULES)
    lines = [head]
    for r in rows:
        cells = [f"{r[f'{x}_pick'][:13]:>13} {r[f'{x}_regret']:.4f}" for x in RULES]
        lines.append(
            f"{r['benchmark']:11} {r['precision']:5} {r['choice']:24} {r['questions']:5d} "
            f"{r['best'][:21]:>21} {r['best_eval']:.4f} " + " ".join(f"{c:>22}" for c in cells)
        )
    lines.append(summary(rows))
    return "\n".join(lines)


def summary(rows: list[dict]) -> str:
    out = ["", "summed regret (nDCG@10 points lost against the best candidate in hindsight):"]
    for group, keep in (
        ("all", lambda r: True),
        ("before training", lambda r: r["choice"] in priors_bench.BEFORE),
        ("after training", lambda r: r["choice"] in priors_bench.AFTER),
    ):
        sel = [r for r in rows if keep(r)]
        if sel:
            out.append(
                f"  {group:16} ({len(sel):2d} choices) "
                + "  ".join(f"{x} {sum(r[f'{x}_regret'] for r in sel):.4f}" for x in RULES)
            )
    for p in sorted({r["precision"] for r in rows}):
        sel = [r for r in rows if r["precision"] == p]
        out.append(
            f"  {p:16} ({len(sel):2d} choices) " + "  ".join(f"{x} {sum(r[f'{x}_regret'] for r in sel):.4f}" for x in RULES)
        )
    return "\n".join(out)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| benchmark | precision | choice | questions | best in hindsight (eval) | "
        + " | ".join(f"{r}: pick, regret" for r in RULES)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(RULES),
    ]
    for r in rows:
        cells = [f"{r[f'{x}_pick']}, {r[f'{x}_regret']:.4f}" for x in RULES]
        lines.append(
            f"| {r['benchmark']} | {r['precision']} | {r['choice']} | {r['questions']} | {r['best']} ({r['best_eval']:.4f}) | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines) + "\n" + summary(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="+", type=Path, help="choice tables from bench/priors.py tables")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--resamples", type=int, default=10_000, help="for the test rule's interval")
    a = ap.parse_args()
    rows = regrets(priors_bench.load(a.tables), a.resamples)
    print(markdown(rows) if a.markdown else text_table(rows))
    out = ROOT / "outputs" / "bench" / "regret.json"
    out.write_text(json.dumps(rows, indent=1))
    print(f"\n{out}")


if __name__ == "__main__":
    main()
