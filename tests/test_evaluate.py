"""The fast evaluator against sentence-transformers' InformationRetrievalEvaluator, and its tie rule."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf
from sentence_transformers import SentenceTransformer
from sentence_transformers.evaluation import InformationRetrievalEvaluator

from runner.evaluate import EvalSet, evaluate_model, top_k
from runner.load import load_python_docs
from runner.schema import EvaluateConfig

KS = dict(hit_rate_at_k=[1, 3, 5, 10], precision_recall_at_k=[1, 5, 10], mrr_at_k=[5, 10],
          ndcg_at_k=[5, 10], map_at_k=[10, 100])


def eval_set_with_several_relevant_docs() -> EvalSet:
    docs = load_python_docs(max_documents=30)
    corpus = {f"d{i:03d}": d.text[:400] for i, d in enumerate(docs)}
    queries, relevant = {}, {}
    for i, d in enumerate(docs[:20]):
        qid = f"q{i:02d}"
        queries[qid] = " ".join(d.text.split()[3:15])  # words from the document's opening
        relevant[qid] = [f"d{i:03d}"] + ([f"d{i + 20:03d}"] if i < 10 else [])  # 10 queries: 2 relevant
    return EvalSet(queries, corpus, relevant)


def test_metrics_equal_information_retrieval_evaluator(tiny_model):
    model = SentenceTransformer(str(tiny_model), device="cpu")
    es = eval_set_with_several_relevant_docs()
    cfg = OmegaConf.merge(OmegaConf.structured(EvaluateConfig), KS)
    ours = evaluate_model(model, es, cfg, batch_size=8).metrics
    ir = InformationRetrievalEvaluator(
        es.queries, es.corpus, {q: set(d) for q, d in es.relevant_docs.items()},
        accuracy_at_k=KS["hit_rate_at_k"], precision_recall_at_k=KS["precision_recall_at_k"],
        mrr_at_k=KS["mrr_at_k"], ndcg_at_k=KS["ndcg_at_k"], map_at_k=KS["map_at_k"],
        score_functions={"cosine": lambda a, b: torch.nn.functional.normalize(a) @ torch.nn.functional.normalize(b).T},
        show_progress_bar=False, batch_size=8,
    )
    theirs = ir.compute_metrices(model)["cosine"]
    assert len(ours) == 4 + 2 * 3 + 2 + 2 + 2
    for name, value in ours.items():
        metric, k = name.split("@")
        key = {"hit_rate": "accuracy"}.get(metric, metric) + "@k"
        assert value == pytest.approx(theirs[key][int(k)], abs=1e-6), name
    assert 0 < ours["ndcg@10"] < 1  # a real, non-degenerate ranking


def test_ties_rank_by_ascending_corpus_row():
    corpus = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.6, 0.8]])
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    assert top_k(query, corpus, 2).tolist() == [[0, 2], [1, 4]]
    assert top_k(query, corpus, 4).tolist() == [[0, 2, 3, 4], [1, 4, 0, 2]]
    assert top_k(query, corpus, 9).shape == (2, 5)  # k beyond the corpus: all rows
