"""Unit tests, one stage at a time, on small real inputs."""

from __future__ import annotations

import functools
import numpy as np
import pytest
from llama_index.core import Document
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import TextNode

from runner.stages.chunk.chunking import chunk_documents, drop_duplicate_chunks
from runner.infra.errors import RagtuneError
from runner.stages.generate.generators import ict_pairs, keyword_pairs, mixed_pairs, title_pairs
from runner.stages.load.corpus import load_python_docs
from runner.infra.metrics import paired_bootstrap_ci, paired_randomization_p, per_query_metrics
from runner.stages.split.splitting import split_by_document

TEXT = (
    "The assert statement checks a condition at run time. "
    "It raises AssertionError when the condition is false. "
    "Assertions are removed when Python runs with the optimize flag. "
    "Use them for internal invariants, not for validating user input."
)


def node(doc: str, i: int, text: str = TEXT) -> TextNode:
    from llama_index.core.schema import NodeRelationship, RelatedNodeInfo

    n = TextNode(id_=f"{doc}#{i:04d}", text=text)
    n.relationships[NodeRelationship.SOURCE] = RelatedNodeInfo(node_id=doc)
    return n


def test_python_docs_are_the_pydoc_topics_with_their_names_as_ids():
    from pydoc_data.topics import topics

    docs = load_python_docs().documents
    assert [d.id_ for d in docs] == sorted(topics)
    assert docs[0].text == topics[docs[0].id_].strip()
    assert [d.id_ for d in load_python_docs(max_documents=3).documents] == sorted(topics)[:3]
    with pytest.raises(RagtuneError, match="max_documents=0"):
        load_python_docs(max_documents=0)


def test_node_ids_are_stable_across_runs_and_name_document_and_position():
    docs = load_python_docs(max_documents=3).documents
    first = chunk_documents(docs, SentenceSplitter(chunk_size=64, chunk_overlap=8))
    again = chunk_documents(load_python_docs(max_documents=3).documents, SentenceSplitter(chunk_size=64, chunk_overlap=8))
    assert [(n.node_id, n.text) for n in first] == [(n.node_id, n.text) for n in again]
    assert len({n.node_id for n in first}) == len(first)
    doc0 = [n for n in first if n.ref_doc_id == docs[0].id_]
    assert [n.node_id for n in doc0[:2]] == [f"{docs[0].id_}#0000", f"{docs[0].id_}#0001"]


def test_duplicate_chunks_keep_the_first_by_id_and_the_order():
    nodes = [node("b", 0, "same text"), node("a", 1, "other"), node("a", 0, "same text"), node("c", 0, "same text")]
    kept, dropped = drop_duplicate_chunks(nodes)
    assert [n.node_id for n in kept] == ["a#0001", "a#0000"] and dropped == 2


def test_chunking_empty_documents_is_a_clear_error():
    with pytest.raises(RagtuneError, match="no non-empty chunk"):
        chunk_documents([Document(text=" ", id_="blank")], SentenceSplitter(chunk_size=64, chunk_overlap=8))


def test_split_is_by_document_seeded_and_without_leakage():
    nodes = [node(f"doc{d}", i) for d in range(10) for i in range(d + 1)]  # 55 chunks
    train, held = split_by_document(nodes, val_fraction=0.2, seed=7)
    train_docs, held_docs = {n.ref_doc_id for n in train}, {n.ref_doc_id for n in held}
    assert train_docs.isdisjoint(held_docs)
    assert 8 <= len(held) <= 11 and len(train) + len(held) == len(nodes)  # about a fifth of the chunks
    assert split_by_document(nodes, 0.2, seed=7) == (train, held)  # same seed, same split
    other = {n.ref_doc_id for n in split_by_document(nodes, 0.2, seed=8)[1]}
    seeds = [{n.ref_doc_id for n in split_by_document(nodes, 0.2, seed=s)[1]} for s in range(20)]
    assert any(s != held_docs for s in seeds + [other])  # the seed matters


def test_split_needs_two_documents():
    with pytest.raises(RagtuneError, match="at least 2"):
        split_by_document([node("only", 0), node("only", 1)], 0.2, seed=0)


def test_ict_is_deterministic_and_removes_the_query_sentence():
    nodes = [node("a", 0), node("b", 0)]
    removed = ict_pairs(nodes, remove_prob=1.0, seed=3)
    assert removed.model_dump() == ict_pairs(nodes, remove_prob=1.0, seed=3).model_dump()
    assert len(removed.queries) == 2
    for qid, query in removed.queries.items():
        (doc_id,) = removed.relevant_docs[qid]
        assert query in TEXT and query not in removed.corpus[doc_id]
        assert len(removed.corpus[doc_id].split()) > 10  # the rest of the passage stays
    kept = ict_pairs(nodes, remove_prob=0.0, seed=3)
    for qid, query in kept.queries.items():
        assert query in kept.corpus[kept.relevant_docs[qid][0]]
    seeds = {tuple(ict_pairs(nodes, remove_prob=1.0, seed=s).queries.values()) for s in range(10)}
    assert len(seeds) > 1  # the seed picks the sentence


def test_ict_gives_several_distinct_questions_per_chunk_and_skips_short_chunks():
    nodes = [node("a", 0), node("short", 0, "Too short."), node("one", 0, "Only one sentence here but long enough.")]
    ds = ict_pairs(nodes, num_questions_per_chunk=3, remove_prob=0.5, seed=0)
    assert set(ds.corpus) == {"a#0000"}
    assert len(ds.queries) == 3 and len(set(ds.queries.values())) == 3
    passage = ds.corpus["a#0000"]
    assert all(ds.relevant_docs[q] == ["a#0000"] for q in ds.queries)
    assert passage.strip()


def test_keyword_queries_are_a_chunks_distinctive_words_in_text_order():
    other = "The import statement loads a module and binds its name in the local namespace. " * 2
    nodes = [node("a", 0), node("b", 0, other), node("tiny", 0, "Just two.")]
    ds = keyword_pairs(nodes, num_questions_per_chunk=3, min_keywords=2, max_keywords=4, pool=6, seed=1)
    assert (
        ds.model_dump()
        == keyword_pairs(nodes, num_questions_per_chunk=3, min_keywords=2, max_keywords=4, pool=6, seed=1).model_dump()
    )
    assert "tiny#0000" not in ds.corpus  # one candidate word ("two"): no query
    assert ds.corpus["a#0000"] == TEXT
    for qid, query in ds.queries.items():
        (doc,) = ds.relevant_docs[qid]
        words = query.split()
        assert 2 <= len(words) <= 4 and len(set(words)) == len(words)
        text = ds.corpus[doc].lower()
        assert all(w in text for w in words) and not {"the", "and", "its", "when"} & set(words)
        positions = [text.index(w) for w in words]
        assert positions == sorted(positions)  # in the order the text has them
    # "statement" is in both chunks, so TF-IDF ranks it below each chunk's own words
    a_words = {w for q, d in ds.relevant_docs.items() if d == ["a#0000"] for w in ds.queries[q].split()}
    assert "assertionerror" in a_words or "assert" in a_words
    assert len(set(ds.queries.values())) == len(ds.queries)


def test_title_queries_come_from_the_loaders_titles_and_leave_the_passages():
    from runner.stages.load.corpus import load_python_docs

    docs = load_python_docs(max_documents=2).documents  # assert, assignment: underlined headings
    nodes = chunk_documents(docs, SentenceSplitter(chunk_size=96, chunk_overlap=8))
    ds = title_pairs(nodes)
    assert ds.queries == {"assert/title": 'The "assert" statement', "assignment/title": "Assignment statements"}
    assert ds.relevant_docs["assert/title"] == [n.node_id for n in nodes if n.ref_doc_id == "assert"]
    first = ds.corpus["assignment#0000"]
    assert first.startswith("Assignment statements are used") and "****" not in first  # title and underline cut
    untitled = [node("x", 0)]  # no title metadata: no query
    assert title_pairs(untitled).queries == {}


def test_mixed_pairs_keep_each_generators_passage_under_its_own_id():
    nodes = [node("a", 0), node("b", 0)]
    for n in nodes:
        n.metadata["title"] = "Assertions at run time"
    ict = ict_pairs(nodes, remove_prob=1.0, seed=3)
    ds = mixed_pairs(nodes, generators={"ict": functools.partial(ict_pairs, remove_prob=1.0, seed=3), "titles": title_pairs})
    assert set(ds.queries) == set(ict.queries) | {"a/title", "b/title"}
    for qid in ict.queries:  # ICT's passage (query sentence cut) under the chunk id
        assert ds.corpus[ds.relevant_docs[qid][0]] == ict.corpus[ict.relevant_docs[qid][0]]
    assert ds.relevant_docs["a/title"] == ["a#0000@1"] and ds.corpus["a#0000@1"] == TEXT  # the whole chunk


def test_metrics_on_a_hand_made_example():
    # query 1: relevant {a}, ranked c a b -> first hit at rank 2
    # query 2: relevant {x, y}, ranked x z y -> hits at ranks 1 and 3
    # query 3: relevant {q}, ranked r s t -> no hit
    ranked = [["c", "a", "b"], ["x", "z", "y"], ["r", "s", "t"]]
    relevant = [{"a"}, {"x", "y"}, {"q"}]
    m = per_query_metrics(
        ranked, relevant, hit_rate_at_k=(1, 3), precision_recall_at_k=(2,), mrr_at_k=(3,), ndcg_at_k=(3,), map_at_k=(3,)
    )
    assert m["hit_rate@1"].tolist() == [0, 1, 0]
    assert m["hit_rate@3"].tolist() == [1, 1, 0]
    assert m["precision@2"].tolist() == [0.5, 0.5, 0]
    assert m["recall@2"].tolist() == [1.0, 0.5, 0]
    assert m["mrr@3"].tolist() == [0.5, 1.0, 0]
    # nDCG: q1 = (1/log2 3) / 1; q2 = (1 + 1/log2 4) / (1 + 1/log2 3)
    assert m["ndcg@3"] == pytest.approx([1 / np.log2(3), 1.5 / (1 + 1 / np.log2(3)), 0])
    # MAP: q1 = (1/2) / 1; q2 = (1/1 + 2/3) / 2
    assert m["map@3"] == pytest.approx([0.5, (1 + 2 / 3) / 2, 0])


def test_identical_models_give_a_zero_delta_with_p_one():
    scores = np.array([0.1, 0.5, 1.0, 0.0, 0.3])
    assert paired_bootstrap_ci(scores, scores) == (0.0, 0.0)
    assert paired_randomization_p(scores, scores) == 1.0


def test_a_consistent_gain_has_a_ci_above_zero_and_a_small_p():
    rng = np.random.default_rng(0)
    base = rng.random(200)
    tuned = base + 0.1 + rng.normal(0, 0.01, 200)
    low, high = paired_bootstrap_ci(base, tuned, seed=1)
    assert 0.09 < low < 0.1 < high < 0.11
    assert paired_randomization_p(base, tuned, seed=1) < 0.01


def test_the_interval_is_scipy_bca_seeded_and_steady_across_seeds():
    from scipy import stats

    rng = np.random.default_rng(3)  # a finetuning-like delta: most queries unchanged, a few move a lot
    base = rng.random(150)
    tuned = base.copy()
    moved = rng.random(150) < 0.3
    tuned[moved] = np.clip(base[moved] + rng.normal(0.08, 0.3, moved.sum()), 0, 1)
    ours = paired_bootstrap_ci(base, tuned, seed=7)
    ref = stats.bootstrap(
        (tuned - base,), np.mean, n_resamples=10_000, method="BCa", vectorized=True, batch=1000, rng=np.random.default_rng(7)
    ).confidence_interval
    assert ours == pytest.approx((ref.low, ref.high), abs=1e-12)
    assert paired_bootstrap_ci(base, tuned, seed=7) == ours  # seeded
    lows = [paired_bootstrap_ci(base, tuned, seed=s)[0] for s in range(5)]
    assert max(lows) - min(lows) < 0.004  # 10,000 resamples: the edge moves in the third decimal at most


def test_every_generator_has_the_one_signature():
    """generate_pairs calls every generator alike: generator(nodes, report=...), its settings as keywords."""
    import dataclasses
    import importlib
    import inspect

    from runner.stages.generate.schema import QA_GENERATOR

    defaults = {option: {f.name: f.default for f in dataclasses.fields(schema)} for option, schema in QA_GENERATOR.items()}
    targets = {option: fields["_target_"] for option, fields in defaults.items()}
    assert set(targets) == {"ict", "keywords", "titles", "mixed", "file", "llm"}
    for option, target in targets.items():
        module, _, name = target.rpartition(".")
        params = list(inspect.signature(getattr(importlib.import_module(module), name)).parameters.values())
        assert params[0].name == "nodes" and params[-1].name == "report" and params[-1].default is None, option
        assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[1:]), option
