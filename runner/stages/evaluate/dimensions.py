"""A Matryoshka model's quality against its size: every trained dimension (and the full one) scored on
the eval set, paired against the full width, with what a vector and an index of the eval corpus
cost in float32.

A model trained with `finetune.loss=matryoshka` ranks well with its embeddings cut to the first d
dimensions; how well, on your data, is this table. The shipped model's eval-set embeddings are
already made (the evaluate stage keeps them), so each width is a cut, a renormalization and a search:
no second encoding. Load the model at the width you pick with
`SentenceTransformer(dir, truncate_dim=d)`; nothing is chosen here (the table reports, the user picks).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from runner.infra.metrics import Paired
from runner.stages.evaluate.schema import K_KEYS
from runner.stages.evaluate.scoring import score_ranked, top_k, with_embeddings


def dimension_rows(reference, eval_set, dims, evaluate_cfg, metric: str, n: int, seed: int) -> dict:
    """{str(d): row} for each width in `dims` and the full one, widest first: bytes a vector, MB of
    the eval corpus's index, metrics, and the paired difference from the full width (delta, CI, p)."""
    import torch

    index, query_emb = reference.dense
    corpus, queries = torch.as_tensor(index.embeddings).float().cpu(), torch.as_tensor(query_emb).float().cpu()
    full = corpus.shape[1]
    max_k = max(max(evaluate_cfg[name]) for name in K_KEYS)
    rows, ref = {}, None
    for d in sorted({int(x) for x in dims if 0 < int(x) <= full} | {full}, reverse=True):
        cut = torch.nn.functional.normalize(corpus[:, :d], dim=1)
        ranked_rows = top_k(torch.nn.functional.normalize(queries[:, :d], dim=1), cut, max_k).tolist()
        result = score_ranked([[index.doc_ids[r] for r in row] for row in ranked_rows], eval_set, evaluate_cfg)
        got = np.asarray(result.per_query[metric])
        ref = got if ref is None else ref
        row = {
            "dim": d,
            "bytes_per_vector": 4 * d,
            "index_mb": round(4 * d * corpus.shape[0] / 2**20, 6),
            "metrics": result.metrics,
        }
        if d != full:
            row.update(Paired.of(ref, got, n, seed).as_dict("delta_vs_full", "delta_ci95", "delta_p"))
        rows[str(d)] = row
    return rows


def plot_dimensions(rows: dict, metric: str, path: Path) -> Path:
    """Quality against width: the metric per dimension, with the paired 95% CI of its difference from
    the full width drawn around it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = [r["dim"] for r in rows.values()]
    scores = [r["metrics"][metric] for r in rows.values()]
    full = scores[0]
    low = [s - (full + r["delta_ci95"][0]) if "delta_ci95" in r else 0 for s, r in zip(scores, rows.values())]
    high = [(full + r["delta_ci95"][1]) - s if "delta_ci95" in r else 0 for s, r in zip(scores, rows.values())]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.errorbar(dims, scores, yerr=[np.clip(low, 0, None), np.clip(high, 0, None)], marker="o", capsize=4)
    ax.axhline(full, color="grey", linestyle=":", label=f"full width ({dims[0]})")
    ax.set_xscale("log", base=2)
    ax.set_xticks(dims, [str(d) for d in dims])
    ax.set_xlabel("embedding dimensions (Matryoshka truncation)")
    ax.set_ylabel(f"{metric} on the eval set")
    ax.set_title("quality against vector size (bars: paired 95% CI vs. full width)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(path)
    return path


def score_dimensions(cfg, model_dir: Path, reference, eval_set, metric: str, out: Path) -> dict:
    """The table for a model trained with loss=matryoshka (`dimensions` in results.json) and its plot,
    `dimensions.png` in the run dir; {} for any other loss."""
    if cfg.finetune.get("loss") != "matryoshka":
        return {}
    reference = with_embeddings(reference, Path(model_dir), eval_set, cfg.evaluate)
    dims, n = cfg.finetune.matryoshka_dims, cfg.evaluate.bootstrap
    rows = dimension_rows(reference, eval_set, dims, cfg.evaluate, metric, n, cfg.seed)
    plot_dimensions(rows, metric, out / "dimensions.png")
    return rows
