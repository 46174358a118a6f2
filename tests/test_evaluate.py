"""The fast evaluator against sentence-transformers' InformationRetrievalEvaluator, and its tie rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sentence_transformers import SentenceTransformer
from sentence_transformers.evaluation import InformationRetrievalEvaluator

from runner.data.beir import read_beir
from runner.infra.errors import RagtuneError
from runner.stages.evaluate.scoring import CorpusIndex, EvalSet, evaluate_model, top_k
from runner.stages.evaluate.llama_index_eval import evaluate_with_llama_index
from runner.infra.metrics import per_query_metrics
from runner.stages.load.corpus import load_python_docs
from runner.config import EvaluateConfig

KS = dict(hit_rate_at_k=[1, 3, 5, 10], precision_recall_at_k=[1, 5, 10], mrr_at_k=[5, 10], ndcg_at_k=[5, 10], map_at_k=[10, 100])


def eval_set_with_several_relevant_docs() -> EvalSet:
    docs = load_python_docs(max_documents=30).documents
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
        es.queries,
        es.corpus,
        {q: set(d) for q, d in es.relevant_docs.items()},
        accuracy_at_k=KS["hit_rate_at_k"],
        precision_recall_at_k=KS["precision_recall_at_k"],
        mrr_at_k=KS["mrr_at_k"],
        ndcg_at_k=KS["ndcg_at_k"],
        map_at_k=KS["map_at_k"],
        score_functions={"cosine": lambda a, b: torch.nn.functional.normalize(a) @ torch.nn.functional.normalize(b).T},
        show_progress_bar=False,
        batch_size=8,
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


def write_beir(root, grades: dict[str, dict[str, int]], docs: dict[str, str], queries: dict[str, str]):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": d, "title": f"T{d}", "text": t}) for d, t in docs.items()))
    (root / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in queries.items()))
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{g}" for q, gs in grades.items() for d, g in gs.items()]
    (root / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")


def test_beir_folder_reads_graded_qrels_and_drops_unjudged_queries(tmp_path):
    docs = {"d1": "alpha", "d2": "beta", "d3": "gamma"}
    queries = {"q1": "first", "q2": "second", "q3": "third", "q4": "not in this split"}
    write_beir(tmp_path, {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}, "q3": {"d1": 0}}, docs, queries)
    beir = read_beir(tmp_path, "test")
    assert beir["corpus"]["d1"] == "Td1 alpha"  # title, a space, text
    assert set(beir["queries"]) == {"q1", "q2"}
    assert beir["grades"]["q1"] == {"d1": 2.0, "d2": 1.0}
    assert beir["counts"] == {"queries_without_relevant": 1, "queries_not_in_split": 1}
    with pytest.raises(RagtuneError, match="splits found: \\['test'\\]"):
        read_beir(tmp_path, "dev")


def test_beir_qrels_naming_missing_documents_are_refused(tmp_path):
    write_beir(tmp_path, {"q1": {"nowhere": 1}}, {"d1": "alpha"}, {"q1": "first"})
    with pytest.raises(RagtuneError, match="missing from corpus.jsonl"):
        read_beir(tmp_path, "test")


def test_graded_ndcg_uses_the_grades_and_the_rest_counts_grade_above_zero():
    # ranked b a c; grades a=2, b=1: DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3)
    m = per_query_metrics(
        [["b", "a", "c"]],
        [{"a", "b"}],
        grades=[{"a": 2.0, "b": 1.0}],
        hit_rate_at_k=(1,),
        precision_recall_at_k=(2,),
        mrr_at_k=(3,),
        ndcg_at_k=(3,),
        map_at_k=(3,),
    )
    assert m["ndcg@3"][0] == pytest.approx((1 + 2 / np.log2(3)) / (2 + 1 / np.log2(3)))
    assert m["hit_rate@1"][0] == 1 and m["recall@2"][0] == 1 and m["mrr@3"][0] == 1
    binary = per_query_metrics([["b", "a", "c"]], [{"a", "b"}], grades=[{"a": 1.0, "b": 1.0}], ndcg_at_k=(3,))
    assert binary["ndcg@3"][0] == pytest.approx(1.0)  # all grades 1: the binary definition


def test_an_index_refuses_queries_embedded_by_another_model():
    index = CorpusIndex("model-a@sha256:aaaa", ["d1", "d2"], torch.eye(2))
    assert index.search(torch.eye(2), "model-a@sha256:aaaa", 1).tolist() == [[0], [1]]
    with pytest.raises(RagtuneError, match="Rebuild"):
        index.search(torch.eye(2), "model-b@sha256:bbbb", 1)


def test_llama_index_engine_equals_the_fast_path(tiny_model):
    model = SentenceTransformer(str(tiny_model), device="cpu")
    es = eval_set_with_several_relevant_docs()
    cfg = OmegaConf.merge(OmegaConf.structured(EvaluateConfig), KS)
    fast = evaluate_model(model, es, cfg, batch_size=8)
    li = evaluate_with_llama_index(str(tiny_model), es, 10, max_length=model.max_seq_length)
    names = {"hit_rate@10", "mrr@10", "precision@10", "recall@10", "ndcg@10"}
    assert set(li.metrics) == names
    for name in names:
        assert li.metrics[name] == pytest.approx(fast.metrics[name], abs=1e-6), name
    assert li.first_relevant_rank == [r if r and r <= 10 else None for r in fast.first_relevant_rank]
    # a query with more relevant documents than k, graded: llama-index's evaluator would normalise its nDCG by all
    # twelve, binary; the engine scores with the one definition every row of the verdict uses
    many = EvalSet(
        {"q": es.queries["q00"]},
        es.corpus,
        {"q": sorted(es.corpus)[:12]},
        {"q": {d: 2.0 if i < 3 else 1.0 for i, d in enumerate(sorted(es.corpus)[:12])}},
    )
    fast, li = evaluate_model(model, many, cfg, batch_size=8), evaluate_with_llama_index(str(tiny_model), many, 10)
    assert li.metrics["ndcg@10"] == pytest.approx(fast.metrics["ndcg@10"], abs=1e-6)


def test_embedding_entries_round_trip_as_arrays_and_half_entries_are_ignored(tmp_path):
    from runner.stages.evaluate.scoring import index_from_json, index_to_json
    from runner.infra.stage_cache import StageCache

    index = CorpusIndex("m@sha256:1", ["a", "b"], torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    calls = []
    build = lambda: calls.append(1) or index  # noqa: E731
    first = StageCache(tmp_path).run("embeddings", "k", build, index_to_json, index_from_json)
    again_cache = StageCache(tmp_path)
    again = again_cache.run("embeddings", "k", build, index_to_json, index_from_json)
    assert again_cache.status == {"embeddings": "hit"} and len(calls) == 1 and first is index
    assert again.model_id == "m@sha256:1" and again.doc_ids == ["a", "b"]
    assert torch.equal(again.embeddings, index.embeddings)
    assert (tmp_path / "embeddings" / "k" / "embeddings.npy").is_file()  # an array, not JSON numbers
    # a killed writer leaves a temp dir (or an entry without its manifest): never trusted
    (tmp_path / "embeddings" / "half").mkdir()
    (tmp_path / "embeddings" / "half" / "embeddings.npy").write_bytes(b"garbage")
    half = StageCache(tmp_path)
    half.run("embeddings", "half", build, index_to_json, index_from_json)
    assert half.status == {"embeddings": "miss"} and len(calls) == 2


def test_a_model_fingerprint_follows_every_file_of_the_model(tiny_model, tmp_path):
    import shutil

    from runner.infra.fingerprint import model_fingerprint, short_identity

    copy = tmp_path / tiny_model.name
    shutil.copytree(tiny_model, copy)
    same = model_fingerprint(str(copy))
    assert same["sha256"] == model_fingerprint(str(tiny_model))["sha256"]  # same files, same identity
    assert short_identity(str(copy), same) == short_identity(str(tiny_model), model_fingerprint(str(tiny_model)))
    seen = {same["sha256"]}
    (copy / "model.safetensors").write_bytes((copy / "model.safetensors").read_bytes()[:-1] + b"\1")
    seen.add(model_fingerprint(str(copy))["sha256"])
    config = copy / "tokenizer_config.json"  # not a weight, and it decides every embedding
    config.write_text(config.read_text().replace("}", ', "model_max_length": 64}', 1))
    seen.add(model_fingerprint(str(copy))["sha256"])
    (copy / "1_Pooling" / "config.json").write_text((copy / "1_Pooling" / "config.json").read_text() + " ")
    seen.add(model_fingerprint(str(copy))["sha256"])
    assert len(seen) == 4
    assert model_fingerprint("BAAI/bge-small-en-v1.5", "abc") == {"hub": "BAAI/bge-small-en-v1.5", "revision": "abc"}


def test_a_hub_model_is_named_by_its_cached_commit_and_blobs(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from runner.infra.fingerprint import model_fingerprint

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--org--model"

    def snapshot(commit: str, blob: str) -> None:
        (repo / "blobs").mkdir(parents=True, exist_ok=True)
        (repo / "blobs" / blob).write_text(f"weights {blob}")
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "snapshots" / commit / "model.safetensors").symlink_to(repo / "blobs" / blob)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(commit)

    snapshot("c1", "b1")
    first = model_fingerprint("org/model")
    assert first["commit"] == "c1" and first["hub"] == "org/model"
    snapshot("c2", "b2")  # the hub moved `main` and the next download brought new weights
    second = model_fingerprint("org/model")
    assert second["commit"] == "c2" and second["sha256"] != first["sha256"]
    assert model_fingerprint("org/model", "c1") == first  # a pinned revision keeps its identity


def test_graded_eval_matches_information_retrieval_evaluator_on_everything_but_ndcg(tiny_model):
    model = SentenceTransformer(str(tiny_model), device="cpu")
    es = eval_set_with_several_relevant_docs()
    es.grades = {q: {d: 2.0 if i == 0 else 1.0 for i, d in enumerate(ds)} for q, ds in es.relevant_docs.items()}
    cfg = OmegaConf.merge(OmegaConf.structured(EvaluateConfig), KS)
    graded = evaluate_model(model, es, cfg, batch_size=8).metrics
    es.grades = None
    binary = evaluate_model(model, es, cfg, batch_size=8).metrics
    for name in graded:
        if name.startswith("ndcg"):
            assert graded[name] != pytest.approx(binary[name], abs=1e-6)  # the grades count
        else:
            assert graded[name] == pytest.approx(binary[name], abs=1e-12)  # grade > 0 is relevant
