"""Compare runs on disk: `python -m runner.compare <sweep dir or run dirs...> [--metric M] [--out DIR]`.

Reads every results.json below the given paths, prints a ranked table (best first by the runs'
`optimized_metric`) of the parameters that differ between runs and the metrics with their deltas
and 95% CIs, and writes compare.csv, compare.md and PNG plots (the objective against each swept
parameter; base vs finetuned per run) into the sweep dir. A multirun prints it when it ends
(`CompareOnMultirunEnd`, a Hydra callback in conf/config.yaml).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import math
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from runner.data.rows import BASE, FINETUNED, SHOWN
from runner.report.results import flatten, metric_value

log = logging.getLogger("ragtune")
IGNORED = ("paths.", "logger.", "hydra.")


def collect(paths: list[Path]) -> list[dict]:
    runs = []
    for path in paths:
        files = [path] if path.is_file() else sorted(path.rglob("results.json"))
        for f in files:
            results = json.loads(f.read_text())
            results["_dir"] = f.parent
            runs.append(results)
    return runs


def swept(runs: list[dict]) -> list[str]:
    """Config keys whose values differ between runs: what the sweep changed."""
    flat = [flatten(r["config"]) for r in runs]
    keys = sorted({k for f in flat for k in f if not k.startswith(IGNORED)})
    return [k for k in keys if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1]


def value_of(results: dict, metric: str) -> float:
    return metric_value(results["metrics"], metric, results.get("verdict", {}).get("deploy"))


def run_label(results: dict) -> str:
    """A sweep job's number (its overrides are the table's columns), else the run dir's name."""
    name = results["_dir"].name
    head = name.split("_", 1)[0]
    return f"#{head}" if head.isdigit() else name


def swept_label(results: dict, params: list[str]) -> str:
    """What a plot calls a run: its values of the swept settings (`learning_rate=1e-05, epochs=2`), not `#0`."""
    if not params:
        return run_label(results)
    flat = flatten(results["config"])
    return ", ".join(f"{p.split('.')[-1]}={flat.get(p)}" for p in params)


def rows_for(runs: list[dict], metric: str) -> tuple[list[str], list[list]]:
    params = swept(runs)
    name = metric.split("/", 1)[1]
    shown = [f"base/{name}", f"finetuned/{name}", f"delta/{name}"]
    extra = [] if metric in shown else [metric]  # the objective, when it is not one of those
    ranked = sorted(runs, key=lambda r: -_num(value_of(r, metric)))
    others = [row for row in SHOWN if row not in (BASE, FINETUNED) and any(row in r["metrics"] for r in runs)]
    scored = (t for r in runs for t, row in r.get("exports", {}).items() if t != "torch" and "metrics" in row)
    exports = list(dict.fromkeys(scored))  # every target some run scored, in the order the runs list them
    export_columns = [c for t in exports for c in (f"{t}/{name}", f"{t} x torch")]
    columns = ["rank", "run", *params, *extra, *shown, "delta 95% CI", *[f"{o}/{name}" for o in others], *export_columns]
    columns.append("verdict")
    rows = []
    for i, r in enumerate(ranked, 1):
        flat = flatten(r["config"])
        m = r["metrics"]
        ci = m.get("delta_ci95", {}).get(name)
        rows.append(
            [
                i,
                run_label(r),
                *[flat.get(p) for p in params],
                *[value_of(r, x) for x in extra],
                m["base"].get(name),
                m.get("finetuned", {}).get(name),
                m.get("delta", {}).get(name),
                f"[{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "",
                *[m.get(o, {}).get(name) for o in others],
                *[v for t in exports for v in _export_cells(r.get("exports", {}).get(t, {}), name)],
                r.get("verdict", {}).get("deploy", ""),
            ]
        )
    return columns, rows


def _export_cells(row: dict, name: str) -> list:
    """An export's score and its encode speed as a multiple of the torch model's (blank if not run)."""
    return [row.get("metrics", {}).get(name), row.get("speedup_vs_torch")]


def _num(x) -> float:
    return x if isinstance(x, (int, float)) and not math.isnan(x) else -math.inf


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:.4f}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"
    return "" if x is None else str(x)


def render(columns: list[str], rows: list[list], title: str) -> str:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for c in columns:
        table.add_column(c, justify="right" if c not in ("run",) else "left", overflow="fold")
    for row in rows:
        table.add_row(*[_fmt(x) for x in row])
    console = Console(width=200, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()


def write_tables(out: Path, columns: list[str], rows: list[list]) -> None:
    with (out / "compare.csv").open("w", newline="") as f:
        csv.writer(f).writerows([columns, *rows])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(x) for x in row) + " |" for row in rows]
    (out / "compare.md").write_text("\n".join(lines) + "\n")


def plot(out: Path, runs: list[dict], metric: str) -> list[Path]:
    """The objective against each swept parameter, the weight-merging curves (when any run has
    one) and base vs finetuned per run, as PNGs in `out`; their paths, base vs finetuned last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = metric.split("/", 1)[1]
    params = swept(runs)
    written = [_plot_against_param(plt, out, runs, metric, param) for param in params]
    ranked = sorted(runs, key=lambda r: -_num(value_of(r, metric)))
    path = _plot_base_vs_finetuned(plt, out, ranked, name, params)
    merge_curve = _plot_merge_curves(plt, out, ranked, params)
    if merge_curve:
        written.append(merge_curve)
    return [*written, path]


def _plot_against_param(plt, out: Path, runs: list[dict], metric: str, param: str) -> Path:
    xs = [flatten(r["config"]).get(param) for r in runs]
    ys = [value_of(r, metric) for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4))
    numeric = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs)
    if not numeric:
        labels = sorted({str(x) for x in xs})
        xs = [labels.index(str(x)) for x in xs]
        ax.set_xticks(range(len(labels)), labels, rotation=20)
    err = _objective_error_bars(runs, metric, ys)
    if err is not None:  # the gain's 95% interval, drawn on each run's point
        ax.errorbar(xs, ys, yerr=err, fmt="none", ecolor="gray", alpha=0.6, capsize=3, label="95% CI of the gain")
    ax.scatter(xs, ys, label="one run", zorder=3)
    best = _best_at_each_value(xs, ys)
    ax.plot(sorted(best), [best[x] for x in sorted(best)], "--", alpha=0.6, label="best at each value")
    if numeric and min(xs) > 0 and max(xs) / min(xs) >= 3:
        ax.set_xscale("log")
    ax.legend(fontsize=8)
    ax.set_xlabel(param)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {param} ({len(runs)} runs)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path = out / f"objective_vs_{param.replace('/', '_')}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _objective_error_bars(runs: list[dict], metric: str, ys: list) -> list[list[float]] | None:
    """For finetuned/<m> and delta/<m>: below and above each point, the paired 95% interval of the gain over the
    base (results.json delta_ci95), which is what tells two runs apart; None for other objectives."""
    group, _, name = metric.partition("/")
    if group not in ("finetuned", "delta"):
        return None
    low, high = [], []
    for r, y in zip(runs, ys):
        ci = r["metrics"].get("delta_ci95", {}).get(name)
        delta = r["metrics"].get("delta", {}).get(name)
        ok = ci is not None and delta is not None and not math.isnan(_num(y))
        low.append(max(0.0, delta - ci[0]) if ok else 0.0)
        high.append(max(0.0, ci[1] - delta) if ok else 0.0)
    return [low, high]


def _best_at_each_value(xs: list, ys: list) -> dict:
    """The best run at each value: what this parameter allows, other things tuned."""
    best = {}
    for x, y in zip(xs, ys):
        if not math.isnan(_num(y)) and y > best.get(x, -math.inf):
            best[x] = y
    return best


def _plot_base_vs_finetuned(plt, out: Path, ranked: list[dict], name: str, params: list[str]) -> Path:
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(ranked) + 2), 4.5))
    pos = range(len(ranked))
    base = [r["metrics"]["base"].get(name, math.nan) for r in ranked]
    tuned = [r["metrics"].get("finetuned", {}).get(name, math.nan) for r in ranked]
    err = _gain_error_bars(ranked, base, tuned, name)
    ax.bar([p - 0.2 for p in pos], base, width=0.4, label="base")
    ax.bar([p + 0.2 for p in pos], tuned, width=0.4, label="finetuned (error bar: 95% CI of the gain)", yerr=err, capsize=3)
    ax.set_xticks(list(pos), [swept_label(r, params)[:40] for r in ranked], rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(name)
    ax.set_xlabel("run (its swept settings)" if params else "run")
    ax.set_title(f"base vs finetuned {name}, best run first")
    ax.set_ylim(0, max([v for v in base + tuned if not math.isnan(v)] + [0.01]) * 1.3)
    ax.legend(loc="upper right", fontsize=8, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = out / "base_vs_finetuned.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _gain_error_bars(ranked: list[dict], base: list[float], tuned: list[float], name: str) -> list[list[float]]:
    """Error bars on the finetuned bars: below and above, the 95% CI of the gain over the base (a BCa
    interval can leave out its own point estimate when the resamples are skewed: that side's bar is 0)."""
    return [
        [
            max(0.0, t - r["metrics"].get("delta_ci95", {}).get(name, [0, 0])[0] - b) if not math.isnan(t) else 0
            for r, b, t in zip(ranked, base, tuned)
        ],
        [
            max(0.0, r["metrics"].get("delta_ci95", {}).get(name, [0, 0])[1] + b - t) if not math.isnan(t) else 0
            for r, b, t in zip(ranked, base, tuned)
        ],
    ]


def _plot_merge_curves(plt, out: Path, ranked: list[dict], params: list[str]) -> Path | None:
    """WiSE-FT: the dev score along the line from the base (0) to the finetuned model (1), per
    run (at most 12); None when no run has a curve."""
    curves = [
        (swept_label(r, params), r["choices"]["merge"]) for r in ranked if r.get("choices", {}).get("merge", {}).get("curve")
    ]
    if not curves:
        return None
    from runner.stages.evaluate.merge import curve_arrays

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, record in curves[:12]:
        xs, ys = curve_arrays(record)
        ax.plot(xs, ys, marker="o", label=label + (f" (kept {record['chosen']:g})" if record.get("kept") else ""))
    ax.set_xlabel("alpha: the finetuned model's share of the weights")
    ax.set_ylabel(f"{curves[0][1]['metric']} on the dev split")
    ax.set_title("weight merging, per run")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "merge_curve.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def compare(paths: list[Path], metric: str | None = None, out: Path | None = None) -> str:
    """Rank, write compare.csv / compare.md / plots into `out`, return the table as text."""
    runs = collect(paths)
    if not runs:
        raise SystemExit(
            f"no results.json below {', '.join(map(str, paths))}: nothing to compare (a run writes one when it finishes)."
        )
    metric = metric or runs[0]["config"].get("optimized_metric", "finetuned/ndcg@10")
    out = out or (paths[0] if len(paths) == 1 and paths[0].is_dir() else Path.cwd())
    out.mkdir(parents=True, exist_ok=True)
    columns, rows = rows_for(runs, metric)
    write_tables(out, columns, rows)
    plot(out, runs, metric)
    return render(columns, rows, f"{len(runs)} runs ranked by {metric}; files in {out}")


class CompareOnMultirunEnd(Callback):
    """Prints the compare table of a sweep when it ends (never fails the sweep)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep = Path(config.hydra.sweep.dir)
        try:
            print(compare([sweep]))
        except BaseException as err:  # noqa: BLE001 - a report must not turn a finished sweep red
            log.warning("compare of %s failed: %s", sweep, err)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m runner.compare", description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="+", type=Path, help="a sweep dir, run dirs, or results.json files")
    ap.add_argument("--metric", help="rank by this (default: the runs' optimized_metric)")
    ap.add_argument("--out", type=Path, help="where to write compare.csv/md and plots")
    args = ap.parse_args(argv)
    print(compare(args.paths, args.metric, args.out))


if __name__ == "__main__":
    sys.exit(main())
