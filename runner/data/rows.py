"""The retrievers a run scores, by name: the rows of the shipping table, of results.json `metrics` and of
retriever.json `rows`, and what `load_retriever(row=...)` takes. One registry, so a row is named, ordered
and described in one place."""

from __future__ import annotations

BASE = "base"  # the base model, dense
BM25 = "bm25"  # keyword search
HYBRID_BASE = "hybrid_base"  # BM25 fused with the base model
FINETUNED = "finetuned"  # the trained model, dense
MERGED = "merged"  # the trained model's weights merged with the base's (WiSE-FT), where the dev split keeps it
HYBRID_FINETUNED = "hybrid_finetuned"  # BM25 fused with the trained model (the merged one where kept)

LABELS = {
    BASE: "the base model",
    BM25: "BM25",
    HYBRID_BASE: "BM25 + the base model",
    FINETUNED: "the finetuned model",
    MERGED: "the merged model",
    HYBRID_FINETUNED: "BM25 + the finetuned model",
}
SIMPLEST_FIRST = (BASE, BM25, HYBRID_BASE, FINETUNED, MERGED, HYBRID_FINETUNED)  # the verdict's order of preference
SHOWN = (BASE, FINETUNED, MERGED, BM25, HYBRID_BASE, HYBRID_FINETUNED)  # tables, results.json and W&B
TRAINED = (FINETUNED, MERGED, HYBRID_FINETUNED)  # rows whose model learned from the training pairs
LEXICAL = (BM25, HYBRID_BASE, HYBRID_FINETUNED)  # rows that search with BM25
HYBRIDS = (HYBRID_BASE, HYBRID_FINETUNED)
