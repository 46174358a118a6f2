"""Keyword and hybrid retrievers, scored like the dense models.

BM25 is bm25s with the tokenisation LlamaIndex's `BM25Retriever` uses (its token pattern, a Snowball
stemmer or none, a stopword list or none); a hybrid is LlamaIndex's `QueryFusionRetriever` over the
dense retriever and BM25, each returning its top k, fused by `relative_score` (min-max per retriever,
weighted sum), `dist_based_score` (the same with mean +- 3 std as the range) or `reciprocal_rerank`
(1 / (60 + rank), weights ignored), cut to k. This module computes the same rankings for every query
at once (numpy, no per-node objects), so a grid of settings costs seconds; a test checks that they
equal the LlamaIndex retrievers' on a small corpus. Where LlamaIndex breaks a tie by the order it
met the nodes (dense results first, then BM25's), so does this.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import numpy as np

from runner.infra.errors import RagtuneError

TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # BM25Retriever's default
FUSION_MODES = ("relative_score", "dist_based_score", "reciprocal_rerank")
RRF_K = 60.0  # QueryFusionRetriever's constant


@dataclass(frozen=True)
class Bm25Settings:
    stopwords: bool
    stemming: bool
    language: str = "english"
    k1: float = 1.5  # term-frequency saturation (bm25s's default, as BM25Retriever builds it)
    b: float = 0.75  # length normalisation

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Fusion:
    mode: str
    top_k: int
    dense_weight: float  # the BM25 side gets 1 - dense_weight; reciprocal_rerank ignores both

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Ranking:
    """Each query's top k: rows of corpus positions (-1 = none) and their scores, best first."""

    doc_ids: list[str]  # corpus positions -> ids
    rows: np.ndarray  # [queries, k] int
    scores: np.ndarray  # [queries, k] float

    def ranked_ids(self) -> list[list[str]]:
        return [[self.doc_ids[j] for j in row if j >= 0] for row in self.rows]


def quiet_bm25s():
    """The bm25s module, its logger quieted: bm25s sets its own logger to DEBUG when imported, which prints a line
    per index built (the choices build dozens, 23 lines in the default run's log)."""
    import bm25s as module

    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return module


def has_stopwords(language: str) -> bool:
    from bm25s.tokenization import _infer_stopwords

    try:
        return bool(_infer_stopwords(language))
    except ValueError:
        return False


def _stemmer(settings: Bm25Settings):
    import Stemmer

    return Stemmer.Stemmer(settings.language) if settings.stemming else None


class Bm25:
    """A BM25 index over `corpus` ({id: text}), rows in sorted id order (as the dense index).

    Tokenised exactly as `BM25Retriever` does: the corpus with `stopwords=<language>` (or none), the
    queries with bm25s's default stopwords, which are English whatever the language (LlamaIndex's
    retriever passes none), both with the Snowball stemmer (or none) and its token pattern."""

    def __init__(self, corpus: dict[str, str], settings: Bm25Settings):
        bm25s = quiet_bm25s()

        self.settings = settings
        self.doc_ids = sorted(corpus)
        self.index = bm25s.BM25(k1=settings.k1, b=settings.b)
        tokens = bm25s.tokenize(
            [corpus[d] for d in self.doc_ids],
            stopwords=settings.language if settings.stopwords else None,
            stemmer=_stemmer(settings),
            token_pattern=TOKEN_PATTERN,
            show_progress=False,
        )
        self.index.index(tokens, show_progress=False)

    def search(self, queries: list[str], k: int) -> Ranking:
        bm25s = quiet_bm25s()

        k = min(k, len(self.doc_ids))  # BM25Retriever lowers its similarity_top_k the same way
        if not queries:
            return Ranking(self.doc_ids, np.zeros((0, k), dtype=np.int64), np.zeros((0, k)))
        tokens = bm25s.tokenize(queries, stemmer=_stemmer(self.settings), token_pattern=TOKEN_PATTERN, show_progress=False)
        rows, scores = self.index.retrieve(tokens, k=k, show_progress=False, n_threads=0)
        return Ranking(self.doc_ids, np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float64))


def dense_ranking(query_emb, index, k: int) -> Ranking:
    """The dense side: each query's top k by cosine over a `CorpusIndex` (normalised embeddings)."""
    import torch

    k = min(k, len(index.doc_ids))
    scores = query_emb.float() @ index.embeddings.to(query_emb.device).float().T
    values, rows = torch.topk(scores, k, dim=1)  # sorted; the fast evaluator owns the tie rule for metrics
    return Ranking(index.doc_ids, rows.cpu().numpy().astype(np.int64), values.cpu().double().numpy())


def _scaled(scores: np.ndarray, valid: np.ndarray, dist_based: bool) -> np.ndarray:
    """Each row's scores to [0, 1] as `_relative_score_fusion` does: min-max, or mean +- 3 std."""
    s = np.where(valid, scores, np.nan)
    if dist_based:
        mean = np.nanmean(s, axis=1, keepdims=True)
        std = np.sqrt(np.nanmean((s - mean) ** 2, axis=1, keepdims=True))
        low, high = mean - 3 * std, mean + 3 * std
    else:
        low, high = np.nanmin(s, axis=1, keepdims=True), np.nanmax(s, axis=1, keepdims=True)
    same = high == low
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(same, np.where(high > 0, 1.0, 0.0), (scores - low) / np.where(same, 1.0, high - low))
    return np.where(valid, out, 0.0)


def fuse(dense: Ranking, lexical: Ranking, fusion: Fusion, chunk: int = 256) -> Ranking:
    """QueryFusionRetriever([dense top k, BM25 top k], mode, similarity_top_k=k, weights) for every query
    (`chunk` queries at a time: the pairwise node comparison is k x k per query)."""
    assert dense.doc_ids == lexical.doc_ids, "both sides must rank the same corpus"
    parts = [
        _fuse(
            dense.rows[i : i + chunk],
            dense.scores[i : i + chunk],
            lexical.rows[i : i + chunk],
            lexical.scores[i : i + chunk],
            fusion,
        )
        for i in range(0, max(len(dense.rows), 1), chunk)
    ]
    return Ranking(dense.doc_ids, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))


def _fuse(d_rows, d_scores, l_rows, l_scores, fusion: Fusion) -> tuple[np.ndarray, np.ndarray]:
    k = fusion.top_k
    d_rows, d_scores, l_rows, l_scores = d_rows[:, :k], d_scores[:, :k], l_rows[:, :k], l_scores[:, :k]
    rows = np.concatenate([d_rows, l_rows], axis=1)  # the order LlamaIndex meets the nodes in
    valid = rows >= 0
    if fusion.mode == "reciprocal_rerank":
        ranks = np.concatenate([np.arange(d_rows.shape[1]), np.arange(l_rows.shape[1])])
        parts = np.broadcast_to(1.0 / (ranks + RRF_K), rows.shape)
    elif fusion.mode in ("relative_score", "dist_based_score"):
        dist = fusion.mode == "dist_based_score"
        w = fusion.dense_weight
        parts = np.concatenate(
            [_scaled(d_scores, d_rows >= 0, dist) * w, _scaled(l_scores, l_rows >= 0, dist) * (1.0 - w)], axis=1
        )
    else:
        raise RagtuneError(f"fusion mode {fusion.mode} is not one of {', '.join(FUSION_MODES)}.")
    parts = np.where(valid, parts, 0.0)
    same = (rows[:, :, None] == rows[:, None, :]) & valid[:, :, None] & valid[:, None, :]
    total = (same * parts[:, None, :]).sum(axis=2)  # a node both retrievers found: its two parts summed
    first = same.argmax(axis=2) == np.arange(rows.shape[1])  # keep a node where LlamaIndex first met it
    keep = first & valid
    order = np.argsort(np.where(keep, -total, np.inf), axis=1, kind="stable")[:, :k]
    out_rows = np.take_along_axis(np.where(keep, rows, -1), order, axis=1)
    out_scores = np.take_along_axis(np.where(keep, total, 0.0), order, axis=1)
    return out_rows, out_scores


def fusion_grid(modes, top_ks, weights) -> list[Fusion]:
    """Every setting to try; reciprocal_rerank ignores the weights, so it is tried once per k."""
    grid = []
    for mode in modes:
        for k in top_ks:
            for w in [0.5] if mode == "reciprocal_rerank" else weights:
                grid.append(Fusion(mode, int(k), float(w)))
    return grid


def bm25_grid(language: str, stopwords, stemming) -> list[Bm25Settings]:
    """The tokenisations to try. `stopwords` / `stemming`: true, false, or null (try both); a language
    without a stopword list is tried without."""
    choices = lambda fixed: [fixed] if fixed is not None else [True, False]  # noqa: E731
    sw = [s for s in choices(stopwords) if not s or has_stopwords(language)]
    return [Bm25Settings(s, t, language) for s in sw for t in choices(stemming)]


def bm25_params_grid(tokenisation: Bm25Settings, k1s, bs) -> list[Bm25Settings]:
    """`tokenisation` with every (k1, b) to try."""
    from dataclasses import replace

    return [replace(tokenisation, k1=float(k1), b=float(b)) for k1 in k1s for b in bs]
