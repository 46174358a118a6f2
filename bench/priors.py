"""The written defaults' evidence: every candidate of the choices made before training, scored on the training
side of finished runs (their train_pairs.json and dev_set.json; never their eval set). Run by hand:

    python bench/priors.py outputs/bench/runs/<run> [<run> ...]            # precision=auto
    python bench/priors.py --precision fp32 outputs/bench/runs/<run> ...

For each run: BM25's four tokenisations (at bm25s's k1 and b), k1 x b at LlamaIndex's tokenisation and at
the best one, and the base model's hybrid fusions (the run's window, BM25 with the best tokenisation) with
the written default's score beside the best. Then, across runs, each candidate's mean rank: what a prior
should be (a candidate that is near the top everywhere). The base model is the run's `base_model`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def side_of(run: Path):
    from runner.data.eval_set import EvalSet
    from runner.data.pairs import read_qa_dataset
    from runner.stages.evaluate.eval_sets import training_side

    pairs = read_qa_dataset(run / "train_pairs.json", "train_pairs")
    dev = None
    if (run / "dev_set.json").is_file():
        d = read_qa_dataset(run / "dev_set.json", "dev_set")
        dev = EvalSet(dict(d.queries), dict(d.corpus), dict(d.relevant_docs))
    return training_side(pairs, dev)


def tables(run: Path, precision: str) -> dict:
    """{choice: {candidate label: mean nDCG@10}} on the run's training side."""
    from omegaconf import OmegaConf

    from runner.infra.models import load_model, resolve_precision
    from runner.stages.evaluate.baselines import Bm25, Bm25Settings, bm25_grid, bm25_params_grid, fuse, fusion_grid
    from runner.stages.evaluate.choices import _table
    from runner.stages.evaluate.scoring import encode_set, ranking_of

    results = json.loads((run / "results.json").read_text())
    side = side_of(run)
    queries = [side.queries[q] for q in side.answered_query_ids()]
    metric = "ndcg@10"
    out = {"questions": len(queries), "passages": len(side.corpus)}

    def scores(settings_list, k=10):
        return [float(t.mean()) for t in _table([Bm25(side.corpus, s).search(queries, k) for s in settings_list], side, metric)]

    tokenisations = bm25_grid("english", None, None)
    out["bm25"] = dict(zip([f"stopwords={s.stopwords} stemming={s.stemming}" for s in tokenisations], scores(tokenisations)))
    best = tokenisations[int(np.argmax(list(out["bm25"].values())))]
    for name, tok in (("bm25_params@llamaindex", Bm25Settings(True, True)), ("bm25_params@best", best)):
        grid = bm25_params_grid(tok, [0.9, 1.2, 1.5, 2.0], [0.4, 0.6, 0.75, 0.9])
        out[name] = dict(zip([f"k1={s.k1:g} b={s.b:g}" for s in grid], scores(grid)))
    base = OmegaConf.create(results["config"]["base_model"])
    window = results["choices"].get("max_seq_length", {}).get("chosen") or base.max_seq_length
    base.max_seq_length = window if isinstance(window, int) else None
    model = load_model(base, "cpu")
    dense = ranking_of(encode_set(model, "base", side, 64, resolve_precision(precision, "cpu")), 100)
    lexical = Bm25(side.corpus, best).search(queries, 100)
    grid = fusion_grid(["relative_score", "dist_based_score", "reciprocal_rerank"], [10, 20, 50], [0.1 * i for i in range(1, 10)])
    values = _table([fuse(dense, lexical, f) for f in grid], side, metric)
    out["fusion"] = {f"{f.mode} k={f.top_k} w={f.dense_weight:.1f}": float(v.mean()) for f, v in zip(grid, values)}
    out["window"] = window
    return out


def mean_ranks(per_run: list[dict]) -> dict:
    """Each candidate's mean rank across runs (1 = best), per choice."""
    ranks = {}
    for choice in ("bm25", "bm25_params@llamaindex", "fusion"):
        sums: dict[str, list[int]] = {}
        for t in per_run:
            ordered = sorted(t[choice], key=lambda c: -t[choice][c])
            for r, c in enumerate(ordered, 1):
                sums.setdefault(c, []).append(r)
        ranks[choice] = dict(sorted(((c, float(np.mean(r))) for c, r in sums.items()), key=lambda x: x[1]))
    return ranks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--precision", default="auto")
    a = ap.parse_args()
    per_run = []
    for run in a.runs:
        t = tables(run, a.precision)
        per_run.append(t)
        print(f"\n{run.name}: {t['questions']} training-side questions over {t['passages']} passages, window {t['window']}")
        for choice in ("bm25", "bm25_params@llamaindex", "bm25_params@best"):
            top = sorted(t[choice].items(), key=lambda x: -x[1])
            print(f"  {choice}: " + "; ".join(f"{c} {v:.4f}" for c, v in top[:6]))
        fusion = sorted(t["fusion"].items(), key=lambda x: -x[1])
        default = t["fusion"]["relative_score k=10 w=0.5"]
        print(f"  fusion: best {'; '.join(f'{c} {v:.4f}' for c, v in fusion[:5])}; LlamaIndex's default {default:.4f}")
    print("\nmean rank across runs (1 = best):")
    for choice, ranks in mean_ranks(per_run).items():
        print(f"  {choice}: " + "; ".join(f"{c} {r:.1f}" for c, r in list(ranks.items())[:8]))
    out = ROOT / "outputs" / "bench" / "priors.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({str(r): t for r, t in zip(a.runs, per_run)}, indent=1))
    print(f"\n{out}")


if __name__ == "__main__":
    main()
