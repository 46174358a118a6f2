"""BM25, the fusion modes, the verdict, merging and shipping: worked out by hand, and checked against
LlamaIndex's own retrievers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import compose, fast
from runner.stages.evaluate.baselines import Bm25, Bm25Settings, Fusion, Ranking, dense_ranking, fuse
from runner.pipeline import run
from runner.stages.ship.verdict import decide


# ---- BM25 and fusion, worked out --------------------------------------------------------------------

CORPUS = {
    "d1": "The cat sat on the mat.",
    "d2": "Dogs chase cats around the big old garden.",
    "d3": "A quick brown fox.",
    "d4": "Cat, cat, cat and cat.",
}


def lucene(tf: int, df: int, n: int, dl: int, avgdl: float, k1: float = 1.5, b: float = 0.75) -> float:
    """bm25s's default scoring, Lucene's BM25: idf = ln(1 + (N - df + 0.5) / (df + 0.5)), times
    tf / (tf + k1 (1 - b + b dl / avgdl)) (no (k1 + 1) factor: it changes no ranking)."""
    return math.log(1 + (n - df + 0.5) / (df + 0.5)) * tf / (tf + k1 * (1 - b + b * dl / avgdl))


def test_bm25_scores_and_ranks_as_worked_out_by_hand():
    # tokens with English stopwords out (the, on, a, and; "around" is not one), stemmed: d1 cat sat mat (3),
    # d2 dog chase cat around big old garden (7), d3 quick brown fox (3), d4 cat cat cat cat (4): avgdl 17 / 4
    stemmed = Bm25(CORPUS, Bm25Settings(stopwords=True, stemming=True)).search(["cat"], 4)
    assert stemmed.ranked_ids()[0][:3] == ["d4", "d1", "d2"]
    expected = [lucene(4, 3, 4, 4, 4.25), lucene(1, 3, 4, 3, 4.25), lucene(1, 3, 4, 7, 4.25), 0.0]
    assert stemmed.scores[0] == pytest.approx(expected, rel=1e-5)
    # unstemmed, "cats" is not "cat": d2 drops to a zero score, the document frequency to 2
    plain = Bm25(CORPUS, Bm25Settings(stopwords=True, stemming=False)).search(["cat"], 2)
    assert plain.ranked_ids()[0] == ["d4", "d1"]
    assert plain.scores[0] == pytest.approx([lucene(4, 2, 4, 4, 4.25), lucene(1, 2, 4, 3, 4.25)], rel=1e-5)


def _ranking(rows: list[str], scores: list[float]) -> Ranking:
    ids = ["a", "b", "c", "d"]
    return Ranking(ids, np.array([[ids.index(r) for r in rows]]), np.array([scores], dtype=float))


DENSE = _ranking(["a", "b", "c"], [0.9, 0.5, 0.1])
LEXICAL = _ranking(["c", "a", "d"], [3.0, 1.0, 0.0])


def _scale(scores: list[float], dist: bool) -> list[float]:
    if dist:
        mean = sum(scores) / len(scores)
        std = (sum((s - mean) ** 2 for s in scores) / len(scores)) ** 0.5
        low, high = mean - 3 * std, mean + 3 * std
    else:
        low, high = min(scores), max(scores)
    return [(s - low) / (high - low) for s in scores]


@pytest.mark.parametrize(
    "mode,weight,expected",
    [
        ("relative_score", 0.5, ["a", "c", "b", "d"]),  # a .5 + .167, c 0 + .5, b .25, d 0
        ("relative_score", 0.2, ["c", "a", "b", "d"]),  # c .8, a .2 + .267, b .1, d 0
        ("dist_based_score", 0.5, ["a", "c", "b", "d"]),
        ("reciprocal_rerank", 0.9, ["a", "c", "b", "d"]),  # a 1/60 + 1/61 > c 1/62 + 1/60 > b 1/61 > d 1/62
    ],
)
def test_each_fusion_mode_ranks_as_worked_out_by_hand(mode, weight, expected):
    fused = fuse(DENSE, LEXICAL, Fusion(mode, 4, weight))
    assert fused.ranked_ids()[0] == expected
    if mode != "reciprocal_rerank":  # the scores themselves, from the formula
        dist = mode == "dist_based_score"
        d = dict(zip("abc", [s * weight for s in _scale([0.9, 0.5, 0.1], dist)]))
        lex = dict(zip("cad", [s * (1 - weight) for s in _scale([3.0, 1.0, 0.0], dist)]))
        total = {n: d.get(n, 0) + lex.get(n, 0) for n in "abcd"}
        assert fused.scores[0] == pytest.approx([total[n] for n in expected])
    else:
        assert fused.scores[0] == pytest.approx([1 / 60 + 1 / 61, 1 / 62 + 1 / 60, 1 / 61, 1 / 62])


def test_a_fusion_tie_keeps_the_order_llama_index_met_the_nodes_in():
    dense = _ranking(["b", "a"], [0.8, 0.2])
    lexical = _ranking(["a", "b"], [5.0, 1.0])  # equal weights: b = .5 + 0, a = 0 + .5
    assert fuse(dense, lexical, Fusion("relative_score", 2, 0.5)).ranked_ids()[0] == ["b", "a"]
    assert fuse(DENSE, LEXICAL, Fusion("relative_score", 2, 0.5)).ranked_ids()[0] == ["a", "c"]  # cut to k


def test_the_fast_path_ranks_exactly_as_llama_index_retrievers(tiny_model):
    import Stemmer
    from llama_index.core import VectorStoreIndex
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever
    from llama_index.core.schema import TextNode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from llama_index.retrievers.bm25 import BM25Retriever
    from sentence_transformers import SentenceTransformer

    from runner.stages.evaluate.scoring import build_index, encode
    from runner.stages.load.corpus import load_python_docs

    docs = load_python_docs(max_documents=30).documents
    corpus = {f"d{i:03d}": d.text[:400] for i, d in enumerate(docs)}
    queries = [" ".join(d.text.split()[5:13]) for d in docs[:12]]
    st = SentenceTransformer(str(tiny_model), device="cpu")
    dense = dense_ranking(encode(st, queries, "query", 16), build_index(st, "m", corpus, 16), 10)
    nodes = [TextNode(id_=d, text=corpus[d]) for d in sorted(corpus)]
    vectors = VectorStoreIndex(nodes, embed_model=HuggingFaceEmbedding(model_name=str(tiny_model), device="cpu"))
    checked = 0
    for settings in (Bm25Settings(True, True), Bm25Settings(False, False)):
        lexical = Bm25(corpus, settings).search(queries, 10)
        bm25 = lambda k: BM25Retriever.from_defaults(  # noqa: E731
            nodes=nodes,
            similarity_top_k=k,
            stemmer=Stemmer.Stemmer("english"),
            skip_stemming=not settings.stemming,
            language="english" if settings.stopwords else None,
        )
        assert lexical.ranked_ids() == [[n.node.node_id for n in bm25(10).retrieve(q)] for q in queries]
        for fusion in (
            Fusion("relative_score", 5, 0.3),
            Fusion("dist_based_score", 10, 0.6),
            Fusion("reciprocal_rerank", 5, 0.5),
        ):
            retriever = QueryFusionRetriever(
                [vectors.as_retriever(similarity_top_k=fusion.top_k), bm25(fusion.top_k)],
                mode=fusion.mode,
                similarity_top_k=fusion.top_k,
                num_queries=1,
                use_async=False,
                llm=MockLLM(),
                retriever_weights=[fusion.dense_weight, 1 - fusion.dense_weight],
            )
            ours = fuse(dense, lexical, fusion).ranked_ids()
            assert ours == [[n.node.node_id for n in retriever.retrieve(q)] for q in queries], (settings, fusion)
            checked += len(queries)
    assert checked == 72
    # k1 and b: BM25Retriever over a bm25s index built with them (what load_retriever ships) ranks as ours does
    from runner.stages.ship.retriever import _bm25_retriever

    for settings in (Bm25Settings(True, False, k1=2.0, b=0.9), Bm25Settings(False, True, k1=0.9, b=0.4)):
        lexical = Bm25(corpus, settings).search(queries, 10)
        shipped = _bm25_retriever(nodes, settings.as_dict(), 10)
        assert lexical.ranked_ids() == [[n.node.node_id for n in shipped.retrieve(q)] for q in queries], settings
        default = Bm25(corpus, Bm25Settings(settings.stopwords, settings.stemming)).search(queries, 10)
        assert default.ranked_ids() != lexical.ranked_ids()  # k1 and b do move the ranking


# ---- the verdict ----------------------------------------------------------------------------------------


def _noisy(base: np.ndarray, shift: float, spread: float, seed: int) -> np.ndarray:
    return base + shift + np.random.default_rng(seed).normal(0, spread, len(base))


def test_a_finetuned_model_that_is_not_clearly_better_is_not_shipped():
    base = np.random.default_rng(0).random(200)
    verdict = decide({"base": base, "finetuned": _noisy(base, 0.005, 0.2, 1)}, "ndcg@10", 2000, 0)
    assert verdict["deploy"] == "base" and "simpler than those it ties with (finetuned" in verdict["reason"]
    verdict = decide({"base": base, "finetuned": _noisy(base, 0.08, 0.05, 1)}, "ndcg@10", 2000, 0)
    assert verdict["deploy"] == "finetuned" and "clearly better than base" in verdict["reason"]


def test_a_dense_model_is_never_recommended_over_a_clearly_better_keyword_or_hybrid_retriever():
    base = np.random.default_rng(0).random(300)
    rows = {
        "base": base,
        "finetuned": _noisy(base, 0.05, 0.05, 1),
        "bm25": _noisy(base, 0.15, 0.05, 2),
        "hybrid_base": _noisy(base, 0.2, 0.05, 3),
        "hybrid_finetuned": _noisy(base, 0.203, 0.2, 4),
    }
    verdict = decide(rows, "ndcg@10", 2000, 0)
    assert verdict["deploy"] == "hybrid_base"  # hybrid_finetuned only ties with it: the simpler one ships
    assert set(verdict["beaten_by"]["finetuned"]) >= {"bm25", "hybrid_base"}
    assert verdict["vs_deploy"]["bm25"]["ci95"][1] < 0 < verdict["vs_deploy"]["hybrid_finetuned"]["ci95"][1]


def test_a_guard_regression_keeps_the_trained_rows_out():
    base = np.random.default_rng(0).random(200)
    rows = {
        "base": base,
        "finetuned": _noisy(base, 0.1, 0.02, 1),
        "hybrid_finetuned": _noisy(base, 0.12, 0.02, 2),
        "bm25": _noisy(base, -0.05, 0.02, 3),
    }
    flagged = {"finetuned": "guard general: ndcg@10 -0.05", "hybrid_finetuned": "guard general: ndcg@10 -0.05"}
    verdict = decide(rows, "ndcg@10", 2000, 0, flagged)
    assert verdict["deploy"] == "base" and "guard general" in verdict["reason"]
    assert decide(rows, "ndcg@10", 2000, 0)["deploy"] == "hybrid_finetuned"


# ---- merging ---------------------------------------------------------------------------------------------


def test_interpolated_weights_are_the_weighted_mean_and_the_ends_are_the_models(tiny_model):
    import torch
    from sentence_transformers import SentenceTransformer

    from runner.stages.evaluate.merge import interpolated

    base = SentenceTransformer(str(tiny_model), device="cpu")
    tuned = SentenceTransformer(str(tiny_model), device="cpu")
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(torch.randn_like(p))
    base_state = base.state_dict()
    for alpha in (0.0, 0.3, 1.0):
        merged = interpolated(base_state, tuned, alpha).state_dict()
        for name, t in tuned.state_dict().items():
            if t.is_floating_point():
                assert torch.allclose(merged[name], (1 - alpha) * base_state[name] + alpha * t, atol=1e-6), name


# ---- a whole run: dev choices, rows, verdict, shipping --------------------------------------------------


@pytest.fixture(scope="module")
def shipped(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("shipped")
    run(compose(fast(tiny_model, "logger=none"), out))
    return out, json.loads((out / "results.json").read_text())


def test_every_run_has_keyword_and_hybrid_rows_choices_and_a_verdict(shipped):
    out, results = shipped
    m = results["metrics"]
    assert {"base", "finetuned", "bm25", "hybrid_base", "hybrid_finetuned"} <= set(m)
    deploy = results["verdict"]["deploy"]
    assert set(m["vs_verdict"]) == set(results["verdict"]["scores"]) - {deploy}
    for row, c in m["vs_verdict"].items():
        assert c["delta"] == pytest.approx(m[row]["ndcg@10"] - m[deploy]["ndcg@10"])
        assert c["ci95"][0] <= c["delta"] <= c["ci95"][1] and 0 < c["p"] <= 1
    choices = results["choices"]
    assert len(choices["bm25"]["candidates"]) == 4 and choices["bm25"]["chosen"] in [
        c["value"] for c in choices["bm25"]["candidates"]
    ]
    assert len(choices["bm25_params"]["candidates"]) == 16 and spec_bm25_is(choices, results)
    grid = choices["fusion_hybrid_base"]["candidates"]
    best = max(c["score"] for c in grid)
    assert len(grid) == 2 * 3 * 9 + 3 and best == next(
        c["score"] for c in grid if c["value"] == choices["fusion_hybrid_base"]["best"]
    )
    tuned = choices["fusion_hybrid_finetuned"]  # the base hybrid's mode and k; its weight within 0.2 of the base's
    base_fusion = choices["fusion_hybrid_base"]["chosen"]
    assert {(c["value"]["mode"], c["value"]["top_k"]) for c in tuned["candidates"]} == {
        (base_fusion["mode"], base_fusion["top_k"])
    }
    assert tuned["default"] == base_fusion and all(
        abs(c["value"]["dense_weight"] - base_fusion["dense_weight"]) <= 0.2 + 1e-9 for c in tuned["candidates"]
    )
    assert set(choices["merge"]["curve"]) == {"0", "0.25", "0.5", "0.75", "1"}
    spec = json.loads((out / "retriever.json").read_text())
    assert spec["deploy"] == deploy and spec["score"] == pytest.approx(results["verdict"]["scores"][deploy])
    assert results["verdict"]["settings"] == {k: spec[k] for k in ("dense_model", "bm25", "fusion")}
    card = (out / "model" / "README.md").read_text()
    assert "## ragtune evaluation" in card and f"ship {deploy}" in card
    assert all(f"| {row} |" in card for row in results["verdict"]["scores"])
    assert results["counts"]["dev_queries"] > 0 and (out / "dev_set.json").is_file()


def spec_bm25_is(choices: dict, results: dict) -> bool:
    """The verdict's BM25 (when it ships one) is the whole of what the choices chose: tokenisation, k1 and b."""
    chosen = choices["bm25_params"]["chosen"]
    shipped = results["verdict"]["settings"]["bm25"]
    return {k: chosen[k] for k in ("stopwords", "stemming")} == choices["bm25"]["chosen"] and shipped in (None, chosen)


def test_no_choice_reads_the_eval_set(tiny_model, tmp_path):
    """The eval file's labels shuffled: every dev choice stays the same; only the final numbers move."""
    src = tmp_path / "src"
    long = ("base_model.max_seq_length=auto", "chunker.chunk_size=400", "chunker.fit_window=false")  # the window: a dev choice
    epochs = ("finetune.max_steps=-1", "finetune.epochs=2", "finetune.best_epoch=true")  # and the epoch kept
    run(compose(fast(tiny_model, "logger=none", "finetune=none", *long), src))
    evals = json.loads((src / "eval_set.json").read_text())
    shuffled = dict(evals)
    qids = sorted(evals["relevant_docs"])
    shuffled["relevant_docs"] = {q: evals["relevant_docs"][qids[(i + 1) % len(qids)]] for i, q in enumerate(qids)}
    choices = []
    for name, data in (("true", evals), ("shuffled", shuffled)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(data))
        out = tmp_path / name
        run(compose(fast(tiny_model, "logger=none", "eval_set=file", f"eval_set.path={path}", *long, *epochs), out))
        results = json.loads((out / "results.json").read_text())
        clock = {"seconds", "seconds_per_step", "projected_s"}  # measured time: not a choice
        strip = lambda r: {k: v for k, v in r.items() if k not in clock} if isinstance(r, dict) else r  # noqa: E731
        kept = {k: strip(v) for k, v in results["choices"].items()}
        kept["time_budget"].pop("reason")  # says the seconds spent, which a loaded machine stretches
        choices.append((kept, results["metrics"]["bm25"]))
    assert choices[0][0] == choices[1][0] and len(choices[0][0]["max_seq_length"]["candidates"]) > 1
    assert set(choices[0][0]["epochs"]["dev"]) == {"1", "2"} and choices[0][0]["time_budget"]["chosen"]["epochs"] == 2
    assert choices[0][1] != choices[1][1]  # the eval numbers did see the labels


def test_load_retriever_rebuilds_each_kind_and_reproduces_its_reported_score(shipped):
    from llama_index.core.schema import TextNode

    from runner.stages.evaluate.choices import per_query
    from runner.data.eval_set import EvalSet
    from runner.stages.ship.retriever import load_retriever

    out, results = shipped
    evals = json.loads((out / "eval_set.json").read_text())
    es = EvalSet(evals["queries"], evals["corpus"], evals["relevant_docs"])
    nodes = [TextNode(id_=d, text=t) for d, t in sorted(es.corpus.items())]
    qids = es.answered_query_ids()
    spec = json.loads((out / "retriever.json").read_text())
    assert set(spec["rows"]) == set(results["verdict"]["scores"]) and spec["deploy"] == results["verdict"]["deploy"]
    for row in ("bm25", "hybrid_base", "hybrid_finetuned", "finetuned"):
        retriever = load_retriever(out, nodes=[n.model_copy() for n in nodes], row=row)
        ranked = [[n.node.node_id for n in retriever.retrieve(es.queries[q])] for q in qids]
        score = per_query(ranked, es, qids, "ndcg@10").mean()
        assert score == pytest.approx(results["metrics"][row]["ndcg@10"], abs=1e-6), row


def test_the_readme_example_runs_as_pasted_on_the_default_runs_documents(tiny_model, tmp_path, monkeypatch):
    """It once searched docs/ (in a clone: ragtune's own documentation) and printed UUIDs."""
    import re

    from conftest import ROOT

    out = tmp_path / "run"
    run(compose(fast(tiny_model, "logger=none"), out))  # the default corpus, as `make run`
    readme = (ROOT / "README.md").read_text()
    code = readme.split("<!-- example: load_retriever -->")[1].split("```python")[1].split("```")[0]
    monkeypatch.chdir(tmp_path)
    printed = []
    exec(code.replace('"outputs/runs/<date>/<run>"', repr(str(out))), {"print": lambda *a: printed.append(a)})
    lines = [a[0] for a in printed]
    assert len(lines) >= 3 and all(re.match(r"^-?\d+\.\d{3}  [a-z][\w-]*: ['\"]", line) for line in lines), lines
    assert not any(re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", line) for line in lines)  # no UUIDs


def test_a_guard_the_finetuned_model_gets_worse_on_is_flagged_and_keeps_it_from_shipping(tiny_model, tmp_path):
    """A guard whose answers are the base model's own first hits: the base scores 1.0, and a model that
    training moved loses there, beyond guard.tolerance; the verdict names the guard and ships no trained row."""
    from sentence_transformers import SentenceTransformer

    from runner.stages.evaluate.scoring import build_index, encode
    from runner.stages.load.corpus import load_python_docs

    docs = load_python_docs(max_documents=80).documents
    corpus = {f"g{i:03d}": d.text[:300] for i, d in enumerate(docs[40:])}
    # questions about other topics: the base model's first hit for each is a near tie, which training moves
    queries = {f"q{i:03d}": " ".join(d.text.split()[2:9]) for i, d in enumerate(docs[:40])}
    st = SentenceTransformer(str(tiny_model), device="cpu")
    index = build_index(st, "base", corpus, 16)
    first = index.search(encode(st, list(queries.values()), "query", 16), "base", 1)[:, 0].tolist()
    guard = tmp_path / "guard.json"
    guard.write_text(
        json.dumps(
            {"queries": queries, "corpus": corpus, "relevant_docs": {q: [index.doc_ids[r]] for q, r in zip(queries, first)}}
        )
    )
    out = tmp_path / "run"
    run(
        compose(
            fast(
                tiny_model,
                "logger=none",
                "merge.enabled=false",
                "finetune.learning_rate=0.05",
                f"+guard.sets.own_hits={{kind: file, path: '{guard}'}}",
            ),
            out,
        )
    )
    results = json.loads((out / "results.json").read_text())
    g = results["guards"]["own_hits"]
    assert g["base"]["ndcg@10"] == pytest.approx(1.0) and g["finetuned"]["flagged"] is True
    assert g["finetuned"]["delta"] < -0.01 and g["finetuned"]["ci95"][1] < 0
    verdict = results["verdict"]
    assert set(verdict["flagged"]) == {"finetuned", "hybrid_finetuned"} and "guard own_hits" in verdict["reason"]
    assert verdict["deploy"] not in ("finetuned", "hybrid_finetuned")


def test_the_nanobeir_recipe_writes_a_beir_folder_the_guards_read(tmp_path):
    import importlib.util

    from conftest import ROOT
    from runner.data.beir import read_beir

    spec = importlib.util.spec_from_file_location("nanobeir_guard", ROOT / "scripts" / "nanobeir_guard.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    tables = {
        "corpus": [{"_id": "d1", "text": "Fish oil and the heart."}, {"_id": "d2", "text": "Vitamin D."}],
        "queries": [{"_id": "q1", "text": "omega-3 and heart disease"}, {"_id": "q2", "text": "vitamins"}],
        "qrels": [{"query-id": "q1", "corpus-id": "d1"}, {"query-id": "q2", "corpus-id": ["d2", "d1"]}],
    }
    asked = []
    load = lambda dataset, subset, split: asked.append((dataset, subset, split)) or tables[subset]  # noqa: E731
    folder = module.write_beir("NanoNFCorpus", tmp_path / "nano", load=load)
    beir = read_beir(folder, "test", key="guard.sets.nano.path")
    assert beir["grades"] == {"q1": {"d1": 1.0}, "q2": {"d2": 1.0, "d1": 1.0}} and beir["corpus"]["d2"] == "Vitamin D."
    assert asked[0] == ("sentence-transformers/NanoBEIR-en", "corpus", "NanoNFCorpus")
