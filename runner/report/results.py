"""Stage `report`: everything the run computed in, results.json and a console table out."""

from __future__ import annotations

import importlib.metadata as md
import io
import platform
from pathlib import Path

import numpy as np

from runner.data.rows import SHOWN as ROWS
from runner.infra.atomic import write_json_atomic, write_text_atomic
from runner.infra.choosing import chosen_value
from runner.infra.metrics import Paired

PACKAGES = (
    "ragtune",
    "torch",
    "sentence-transformers",
    "transformers",
    "llama-index-core",
    "llama-index-finetuning",
    "hydra-core",
    "wandb",
    "datasets",
    "accelerate",
)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: W&B's runs table shows and filters flat keys."""
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def metric_value(metrics: dict, name: str, deploy: str | None = None) -> float:
    """`finetuned/ndcg@10` -> its value. `verdict/ndcg@10`: the value of the row the verdict ships
    (`deploy`), the number to rank runs by when their verdicts differ. Without training the finetuned
    model is the base model (and a delta is 0); a metric the run did not compute is NaN."""
    group, metric = name.split("/", 1)
    if group == "verdict":
        if deploy is None:
            return float("nan")
        group = deploy
    if group not in metrics:
        if group == "delta":
            return 0.0
        group = "base" if group == "finetuned" else group
    return float(metrics.get(group, {}).get(metric, float("nan")))


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def compare_metrics(base, tuned, n_resamples: int, seed: int) -> dict:
    """base / finetuned / delta means, with a paired bootstrap CI and a randomization p per delta."""
    metrics: dict = {"base": base.metrics}
    if tuned is None:
        return metrics
    metrics["finetuned"] = tuned.metrics
    paired = {k: Paired.of(base.per_query[k], tuned.per_query[k], n_resamples, seed) for k in base.metrics}
    metrics["delta"] = {k: tuned.metrics[k] - base.metrics[k] for k in base.metrics}
    metrics["delta_ci95"] = {k: list(c.ci95) for k, c in paired.items()}
    metrics["delta_p"] = {k: c.p for k, c in paired.items()}
    return metrics


def write_per_query(path: Path, eval_set, rows: dict, metric: str) -> tuple[list[str], list[list]]:
    """One row per query: the rank of its first relevant document under every retriever the run scored
    (1-based, blank = not in that retriever's top k), then its value of the deciding `metric` under each (what
    pairs this run's rows with another run's, question by question). Returns (columns, rows) for the W&B table."""
    import csv

    names = [r for r in ROWS if r in rows]
    base = rows["base"]
    columns = ["query_id", "query", "relevant_ids", *[f"{n}_rank" for n in names], *[f"{n}_{metric}" for n in names]]
    table = [
        [
            qid,
            eval_set.queries[qid],
            " ".join(eval_set.relevant_docs[qid]),
            *[rows[n].first_relevant_rank[i] for n in names],
            *[round(float(rows[n].per_query[metric][i]), 6) for n in names],
        ]
        for i, qid in enumerate(base.query_ids)
    ]
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(columns)
    w.writerows([["" if v is None else v for v in row] for row in table])
    write_text_atomic(buf.getvalue(), path)
    return columns, table


def _expected(record: dict, chosen):
    """The chosen candidate's expected score (the evidence and the prior combined), where the record has one."""
    return next((c.get("expected") for c in record.get("candidates", []) if c.get("value") == chosen), None)


def choices_summary(choices: dict) -> dict:
    """Per choice: what was chosen and on what evidence (W&B's summary: choices/<name>.chosen, .questions,
    .stability, .expected, .margin, .margin_ci95_low / _high, .decided_by)."""
    out = {}
    for name, record in choices.items():
        if not isinstance(record, dict):
            continue
        chosen = chosen_value(record)
        entry = {"chosen": chosen if chosen is not None else record.get("reason")}
        entry.update({k: record[k] for k in ("questions", "stability", "margin", "decided_by") if record.get(k) is not None})
        if _expected(record, chosen) is not None:
            entry["expected"] = _expected(record, chosen)
        if record.get("margin_ci95"):
            entry["margin_ci95_low"], entry["margin_ci95_high"] = record["margin_ci95"]
        out[name] = entry
    return out


def _value_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items() if k != "language")
    return str(value)


def choices_table(choices: dict) -> str:
    """Every choice the run made from data: what it chose, on how many questions, what decided it (the
    evidence, the benchmarks' prior, or both), its score and expected score (the two combined), and how
    clearly the best candidate won (its margin over the runner-up, or, where the rule kept another, the best's
    gap to the default; its stability)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="choices (never on the eval set)", title_justify="left")
    for col in ("choice", "chosen", "by", "questions", "score", "expected", "best / runner-up", "margin [95% CI]", "stability"):
        table.add_column(col, justify="left" if col in ("choice", "chosen", "by", "best / runner-up") else "right")
    for name, record in choices.items():
        if not isinstance(record, dict) or "decided_by" not in record:
            continue
        chosen = chosen_value(record)
        score = next((c.get("score") for c in record.get("candidates", []) if c["value"] == chosen), None)
        other, gap = "", record.get("margin")
        ci = record.get("margin_ci95")
        expected = _expected(record, chosen)
        if "vs_default" in record and record["best"] != chosen:  # the rule kept another: how far the best was
            other, gap, ci = f"best: {_value_text(record['best'])}", record["vs_default"]["delta"], record["vs_default"]["ci95"]
        elif "runner_up" in record:
            other = f"runner-up: {_value_text(record['runner_up'])}"
        table.add_row(
            name,
            _value_text(chosen),
            record["decided_by"],
            str(record.get("questions", "")),
            f"{score:.4f}" if score is not None else "",
            f"{expected:.4f}" if expected is not None else "",
            other,
            f"{gap:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]" if ci else "",
            f"{record['stability']:.0%}" if record.get("stability") is not None else "",
        )
    console = Console(width=180, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()


def wandb_metrics(metrics: dict) -> dict:
    """`base/ndcg@10`, `bm25/ndcg@10`, `delta/ndcg@10`, `delta_ci95_low/ndcg@10`, `vs_verdict/bm25/delta`,
    ...: the names W&B shows."""
    flat = {}
    for group in (*ROWS, "delta", "delta_p"):
        for k, v in metrics.get(group, {}).items():
            flat[f"{group}/{k}"] = v
    for k, (low, high) in metrics.get("delta_ci95", {}).items():
        flat[f"delta_ci95_low/{k}"], flat[f"delta_ci95_high/{k}"] = low, high
    for row, c in metrics.get("vs_verdict", {}).items():
        flat.update(
            {
                f"vs_verdict/{row}/delta": c["delta"],
                f"vs_verdict/{row}/ci95_low": c["ci95"][0],
                f"vs_verdict/{row}/ci95_high": c["ci95"][1],
                f"vs_verdict/{row}/p": c["p"],
            }
        )
    return flat


def metrics_table(metrics: dict) -> str:
    """The base vs finetuned table as plain text (rich), for the console and run.log alike."""
    from rich.console import Console
    from rich.table import Table

    tuned = "finetuned" in metrics
    table = Table(title="retrieval on the eval set", title_justify="left")
    table.add_column("metric")
    table.add_column("base", justify="right")
    if tuned:
        for col in ("finetuned", "delta", "95% CI of delta", "p"):
            table.add_column(col, justify="right")
    for k, b in metrics["base"].items():
        row = [k, f"{b:.4f}"]
        if tuned:
            low, high = metrics["delta_ci95"][k]
            row += [
                f"{metrics['finetuned'][k]:.4f}",
                f"{metrics['delta'][k]:+.4f}",
                f"[{low:+.4f}, {high:+.4f}]",
                f"{metrics['delta_p'][k]:.3f}",
            ]
        table.add_row(*row)
    console = Console(width=110, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text() + (P_NOTE if tuned else "")


P_NOTE = (
    "The verdict and every comparison read the 95% interval. p is a second look, a sign-flip randomization test\n"
    "of no difference: it resamples the signs of the per-question deltas where the interval resamples the\n"
    "questions, so near the edge (an interval that just clears 0, p just above 0.05) the two can disagree.\n"
)


def shipping_table(metrics: dict, verdict: dict) -> str:
    """Every retriever the run scored, against the verdict's: the answer to "what should I ship?"."""
    from rich.console import Console
    from rich.table import Table

    metric = verdict["metric"]
    table = Table(title=f"what to ship (deciding metric: {metric}; intervals vs. the verdict's retriever)", title_justify="left")
    for col in ("retriever", metric, "hit_rate@10", "mrr@10", "vs. verdict", "95% CI", "p", ""):
        table.add_column(col, justify="left" if col in ("retriever", "") else "right")
    for row in ROWS:
        if row not in metrics or not isinstance(metrics[row], dict):
            continue
        m = metrics[row]
        c = metrics.get("vs_verdict", {}).get(row)
        mark = "<- ship" if row == verdict["deploy"] else ("flagged by a guard" if row in verdict.get("flagged", {}) else "")
        table.add_row(
            row,
            *(f"{m[k]:.4f}" if k in m else "" for k in (metric, "hit_rate@10", "mrr@10")),
            f"{c['delta']:+.4f}" if c else "",
            f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c else "",
            f"{c['p']:.3f}" if c else "",
            mark,
        )
    console = Console(width=120, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()


def exports_table(exports: dict, metric: str) -> str:
    """Each export against the torch model it came from: size, speed on this CPU, quality."""
    from rich.table import Table

    cpu = exports.get("torch", {}).get("cpu")
    where = f"on the CPU: {cpu['name']}, {cpu['cores']} cores, int8 instructions: {cpu['int8']}" if cpu else "on the CPU"
    table = Table(title=f"exports ({where}; {metric} on the eval set, paired vs. torch)", title_justify="left")
    columns = ("backend", "size MB", "texts/s", "x torch", "query ms", "x torch", "peak MB", metric, "vs. torch", "95% CI", "p")
    for col in (*columns, "top-10 kept"):
        table.add_column(col, justify="left" if col == "backend" else "right")
    for name, row in exports.items():
        if "error" in row:
            table.add_row(name, *[""] * (len(columns) - 1), row["error"][:60])
            continue
        speed = f"{row['speedup_vs_torch']:.2f}" if "speedup_vs_torch" in row else ""
        query = ("", "")
        if "query_speedup_vs_torch" in row:
            query = (f"{row['query_ms']:.1f}", f"{row['query_speedup_vs_torch']:.2f}")
        sizes = (f"{row['size_mb']:.1f}", f"{row['texts_per_s']:.1f}", speed, *query, f"{row['peak_rss_mb']:.0f}")
        kept = f"{row['top10_overlap']:.1%}" if "top10_overlap" in row else ""
        table.add_row(name, *sizes, *_paired_cells(row, metric, "delta_vs_torch"), kept)
    return _text(table)


def dimensions_table(rows: dict, metric: str) -> str:
    """A Matryoshka model at each trained width: vector and index size, quality, paired vs. full width."""
    from rich.table import Table

    title = f"dimensions (Matryoshka truncation; {metric} on the eval set, paired vs. full width; dimensions.png)"
    table = Table(title=title, title_justify="left")
    for col in ("dims", "bytes/vector", "index MB", metric, "vs. full", "95% CI", "p"):
        table.add_column(col, justify="right")
    for row in rows.values():
        sizes = (str(row["dim"]), str(row["bytes_per_vector"]), f"{row['index_mb']:.2f}")
        table.add_row(*sizes, *_paired_cells(row, metric, "delta_vs_full"))
    return _text(table)


def _paired_cells(row: dict, metric: str, delta: str) -> tuple[str, ...]:
    """The metric, then the paired difference, its 95% CI and p (blank for the reference row)."""
    ci = row.get("delta_ci95")
    if not ci:
        return f"{row['metrics'][metric]:.4f}", "", "", ""
    return f"{row['metrics'][metric]:.4f}", f"{row[delta]:+.4f}", f"[{ci[0]:+.4f}, {ci[1]:+.4f}]", f"{row['delta_p']:.3f}"


def _text(table) -> str:
    from rich.console import Console

    console = Console(width=150, record=True, file=io.StringIO(), color_system=None)
    console.print(table)
    return console.export_text()


def dimensions_summary(rows: dict, metric: str) -> dict:
    """The W&B summary keys of the Matryoshka table: dimensions/<d>/<what>."""
    out = {}
    for d, row in rows.items():
        out[f"dimensions/{d}/{metric}"] = row["metrics"][metric]
        if "delta_ci95" in row:
            out[f"dimensions/{d}/delta_vs_full"] = row["delta_vs_full"]
            out[f"dimensions/{d}/delta_ci95_low"], out[f"dimensions/{d}/delta_ci95_high"] = row["delta_ci95"]
    return out


def exports_summary(exports: dict, metric: str) -> dict:
    """The W&B summary keys of the exports: export/<backend>/<what>."""
    keep = ("size_mb", "texts_per_s", "speedup_vs_torch", "query_ms", "query_speedup_vs_torch", "peak_rss_mb")
    keep += ("delta_vs_torch", "delta_p", "top10_overlap", "cosine_mean", "cosine_min")
    out = {}
    for name, row in exports.items():
        out.update({f"export/{name}/{k}": row[k] for k in keep if k in row})
        if "metrics" in row:
            out[f"export/{name}/{metric}"] = row["metrics"][metric]
        if "delta_ci95" in row:
            out[f"export/{name}/delta_ci95_low"], out[f"export/{name}/delta_ci95_high"] = row["delta_ci95"]
        if "error" in row:
            out[f"export/{name}/error"] = row["error"]
        if "cpu" in row:
            out.update({f"export/cpu/{k}": v for k, v in row["cpu"].items()})
    return out


def write_results(path: Path, results: dict) -> Path:
    return write_json_atomic(_plain(results), path)


def _plain(obj):
    """numpy scalars -> Python numbers, so json can write them."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
