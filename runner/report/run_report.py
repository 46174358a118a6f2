"""What a finished job reports: results.json, the W&B summary and tables, the console tables, and the
throughput it reached."""

from __future__ import annotations

import logging
from pathlib import Path

from runner.data.eval_set import EvalSet
from runner.job import Job
from runner.report.results import (
    choices_summary,
    choices_table,
    dimensions_summary,
    dimensions_table,
    exports_summary,
    exports_table,
    flatten,
    metric_value,
    metrics_table,
    shipping_table,
    wandb_metrics,
    write_per_query,
    write_results,
)
from runner.stages.ship.retriever import settings_text

log = logging.getLogger("ragtune")


def write_tables(job: Job, eval_set: EvalSet, rows: dict, choices: dict) -> None:
    """per_query.csv, and the same per-query rows and the merge curve as W&B tables."""
    columns, table_rows = write_per_query(job.out / "per_query.csv", eval_set, rows, job.metric)
    job.tracker.table("per_query", columns, table_rows)
    if choices.get("merge", {}).get("curve"):  # WiSE-FT: dev score against the finetuned model's share
        curve = [[float(a), v] for a, v in choices["merge"]["curve"].items()]
        job.tracker.table("merge_curve", ["alpha", f"dev {job.metric}"], curve)


def report(job: Job, results: dict, spec: dict, llama_index: str | None) -> float:
    """results.json, the W&B summary and the console tables; returns the optimized metric's value."""
    cfg, device = job.cfg, job.device
    metrics, verdict, choices, timings = results["metrics"], results["verdict"], results["choices"], results["timings_s"]
    results["throughput"] = throughput(job.counts, timings, cfg, choices)
    if device.startswith("cuda"):
        import torch

        results["gpu"] = {
            "name": torch.cuda.get_device_name(device),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated(device) / 2**30, 3),
        }
    write_results(job.out / "results.json", results)
    value = metric_value(metrics, cfg.optimized_metric, verdict["deploy"])
    job.tracker.summary(
        {
            **wandb_metrics(metrics),
            "objective": value,
            "verdict/deploy": verdict["deploy"],
            "verdict/reason": verdict["reason"],
            "verdict/settings": settings_text(spec, job.out),
            **flatten(choices_summary(choices), "choices/"),
            **{f"timings_s/{k}": v for k, v in timings.items()},
            **{f"cache/{k}": v for k, v in results["cache"].items()},
            **{f"counts/{k}": v for k, v in job.counts.items()},
            **exports_summary(results["exports"], job.metric),
            **dimensions_summary(results["dimensions"], job.metric),
        }
    )
    if results["dimensions"]:
        dims = results["dimensions"].values()
        rows = [[r["dim"], r["bytes_per_vector"], r["metrics"][job.metric], r.get("delta_vs_full", 0.0)] for r in dims]
        job.tracker.table("dimensions", ["dims", "bytes_per_vector", job.metric, "delta_vs_full"], rows)
    out = job.out
    log.info("\n%s", metrics_table(metrics))
    log.info("\n%s", choices_table(choices))
    log.info("\n%s", shipping_table(metrics, verdict))
    if results["exports"]:
        log.info("\n%s", exports_table(results["exports"], job.metric))
        for name, row in results["exports"].items():
            if "llama_index" in row and name != "torch":
                log.info("export %s: %s", name, row["llama_index"])
    if results["dimensions"]:
        log.info("\n%s", dimensions_table(results["dimensions"], job.metric))
    log.info("%s", verdict_text(verdict, spec, out))
    log.info("results: %s", out / "results.json")
    log.info("retriever: ragtune.load_retriever(%r, documents) rebuilds it in LlamaIndex", str(out))
    if results["model_dir"]:
        log.info("model:   %s  (LlamaIndex: %s)", results["model_dir"], llama_index)
    return value


def verdict_text(verdict: dict, spec: dict, run_dir: Path) -> str:
    """The verdict for the console: what to deploy and what it is built from, then its reason a clause a line
    (the score, the rows it ties with, those it beats, those not chosen) instead of one 600-character line."""
    reason = verdict["reason"]
    for clause in ("; simpler than", "; clearly better than", "; not chosen:"):
        reason = reason.replace(clause, "\n  " + clause[2:])
    return f"verdict: deploy {verdict['deploy']}\n  {settings_text(spec, run_dir)}\n  {reason}"


def throughput(counts: dict, timings: dict, cfg, choices: dict | None = None) -> dict:
    """Training pairs per second (all epochs) and eval texts (corpus + queries) encoded per second."""
    out = {}
    ft = cfg.finetune
    trained = (choices or {}).get("time_budget", {}).get("chosen")
    seen = (
        trained["steps"] * ft.batch_size
        if trained
        else ft.max_steps * ft.batch_size
        if ft.get("max_steps", -1) > 0
        else counts.get("train_pairs", 0) * float(ft.get("epochs") or 0)
        if ft.get("epochs") != "auto"
        else 0
    )
    if timings.get("finetune") and seen:
        out["train_pairs_per_s"] = round(seen / timings["finetune"], 2)
    texts = counts.get("eval_corpus", 0) + counts.get("eval_queries", 0)
    if timings.get("evaluate_finetuned") and texts:
        out["encode_texts_per_s"] = round(texts / timings["evaluate_finetuned"], 1)
    return out
