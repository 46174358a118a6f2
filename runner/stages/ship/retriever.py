"""Ship the verdict: what an app needs to rebuild the chosen retriever, and the call that rebuilds it.

A run writes `retriever.json` (the verdict; the model the verdict's row was scored with, as a path relative
to the run directory or a hub id with its revision, an adapter where there is one, its prompts, window and
precision; BM25's tokenisation, k1 and b; the fusion's mode, k and weights) and a model card into that model.
`ragtune.load_retriever(run_dir, documents)` returns the retriever as LlamaIndex builds it: a
`VectorStoreIndex` retriever over the model, a `BM25Retriever`, or a `QueryFusionRetriever` over both, with
the settings the run scored, from wherever the run directory has been moved.
Where a run directory's models are found on another machine, and what it may not run: `portable`.
"""

from __future__ import annotations

import json
from pathlib import Path

from runner.data.rows import BM25, HYBRIDS, LEXICAL
from runner.infra.atomic import write_json_atomic, write_text_atomic
from runner.infra.errors import RagtuneError

from runner.stages.ship.portable import RETRIEVER_FILE, local_chunker, locate, relative_to_run, trusted, with_tokenizer


def retriever_spec(
    verdict: dict,
    *,
    run_dir: Path,
    models: dict,
    prompts: dict,
    max_seq_length: int | None,
    precision: str,
    bm25: dict | None,
    fusion: dict,
    chunker: dict,
    scores: dict,
) -> dict:
    """`models`: row -> {"model": dir or hub id, "revision": ..., "adapter": {"path", "class"} or None}, the
    model each dense row was scored with (`steps.shipped_models`)."""
    deploy = verdict["deploy"]
    dense = models.get(deploy) if deploy != BM25 else None
    adapter = (dense or {}).get("adapter")
    return {
        "deploy": deploy,
        "reason": verdict["reason"],
        "metric": verdict["metric"],
        "score": scores.get(deploy),
        "dense_model": relative_to_run(dense["model"], run_dir) if dense else None,
        "revision": dense.get("revision") if dense else None,
        "adapter": {**adapter, "path": relative_to_run(adapter["path"], run_dir)} if adapter else None,
        "query_prompt": prompts.get("query", ""),
        "passage_prompt": prompts.get("passage", ""),
        "max_seq_length": max_seq_length,
        "precision": precision,  # what the scores were computed at; an fp32 rebuild matches an fp32 run exactly
        "bm25": bm25 if deploy in LEXICAL else None,
        "fusion": fusion.get(deploy) if deploy in HYBRIDS else None,
        "chunker": with_tokenizer(chunker, lambda name: relative_to_run(name, run_dir)),
    }


def settings(spec: dict) -> dict:
    """What the shipped retriever is built from, for the verdict in results.json and W&B."""
    return {"dense_model": spec["dense_model"], "bm25": spec["bm25"], "fusion": spec["fusion"]}


def settings_text(spec: dict, run_dir: Path | None = None) -> str:
    """One line: the model (its path, where it lies inside `run_dir`), BM25's tokenisation and the fusion the
    verdict ships."""
    model = spec["dense_model"]
    if model and run_dir is not None and (Path(run_dir) / model).exists():
        model = str(Path(run_dir) / model)
    parts = [f"model {model}"] if model else []
    if spec["bm25"]:
        b = spec["bm25"]
        parts.append(
            f"BM25 {'with' if b['stopwords'] else 'without'} {b['language']} stopwords, "
            f"{'with' if b['stemming'] else 'without'} stemming, k1 {b.get('k1', 1.5):g}, b {b.get('b', 0.75):g}"
        )
    if spec["fusion"]:
        f = spec["fusion"]
        parts.append(
            f"QueryFusionRetriever mode {f['mode']}, similarity_top_k {f['top_k']}, "
            f"retriever_weights [{f['dense_weight']:g} dense, {1 - f['dense_weight']:g} BM25]"
        )
    return "; ".join(parts)


def write_spec(run_dir: Path, spec: dict) -> Path:
    return write_json_atomic(spec, Path(run_dir) / RETRIEVER_FILE)


def _nodes(spec: dict, documents, nodes, run_dir: Path):
    """The nodes to search: `nodes` as given, or `documents` chunked as the run chunked its corpus (sized on
    their text alone, duplicates dropped)."""
    if nodes is not None:
        return list(nodes)
    if documents is None:
        raise ValueError(
            "give load_retriever the documents to search (llama-index Documents, chunked the run's way) "
            "or nodes (already chunked; their ids are what the retriever returns)"
        )
    from runner.stages.chunk.chunkers import fill_tiktoken_cache
    from runner.stages.chunk.chunking import build_parser, chunk_documents, drop_duplicate_chunks

    fill_tiktoken_cache()
    parser = build_parser(local_chunker(spec["chunker"], run_dir))
    return drop_duplicate_chunks(chunk_documents(list(documents), parser))[0]


def uuid_node(node):
    """`node` with an id a vector database takes: some accept only UUIDs (Qdrant: "Point id doc#0003 is not a
    valid UUID"), and ragtune's chunk ids read `<document>#<position>`. Such an id becomes the UUID5 of itself,
    the same on every run, and stays in `metadata["ragtune_id"]`; a UUID stays as it is. Both sides of a
    hybrid get the same ids, so the fusion still sees one node where both retrievers found it."""
    import uuid

    try:
        uuid.UUID(node.node_id)
        return node
    except ValueError:
        pass
    new = node.model_copy()
    new.id_ = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ragtune:{node.node_id}"))
    new.metadata = {**node.metadata, "ragtune_id": node.node_id}
    return new


def read_spec(run_dir: str | Path) -> dict:
    """retriever.json of a finished run, or an error that says what to give instead."""
    path = Path(run_dir) / RETRIEVER_FILE
    if not path.is_file():
        raise RagtuneError(
            f"{run_dir} holds no {RETRIEVER_FILE}: give load_retriever the directory of a finished run "
            "(outputs/runs/<date>/<time>_<name>_<pid>, the path the run's last lines print); a run that stopped "
            "before its verdict writes none."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def embedding(spec: dict, run_dir: Path, device: str | None = None):
    """The LlamaIndex embedding the verdict's dense row was scored with: `HuggingFaceEmbedding` over the model
    (with its revision, window and exactly its prompts), wrapped in `AdapterEmbeddingModel` for an adapter."""
    from runner.infra.models import hf_embedding

    def here(path: str) -> str:
        return str(run_dir / path) if (run_dir / path).exists() else path

    embed = hf_embedding(
        locate(spec["dense_model"], run_dir, "the dense model"),
        revision=spec.get("revision"),
        max_length=spec["max_seq_length"],
        query_prompt=spec["query_prompt"],
        passage_prompt=spec["passage_prompt"],
        device=device,
    )
    if spec.get("adapter"):
        import llama_index.embeddings.adapter.utils as layers
        from llama_index.embeddings.adapter import AdapterEmbeddingModel

        cls = getattr(layers, spec["adapter"]["class"])
        embed = AdapterEmbeddingModel(embed, here(spec["adapter"]["path"]), adapter_cls=cls)
    return embed


def load_retriever(
    run_dir: str | Path,
    documents=None,
    *,
    nodes=None,
    row: str | None = None,
    device: str | None = None,
    vector_store=None,
    storage_context=None,
    trust_remote_code: bool = False,
):
    """The run's recommended retriever over `documents` (chunked with the run's chunker) or `nodes`.

    `row`: another retriever the run scored instead of the verdict's (`base`, `finetuned`, `merged`, `bm25`,
    `hybrid_base`, `hybrid_finetuned`: results.json `metrics`). `vector_store` (any LlamaIndex vector store:
    Qdrant, Chroma, ...) or `storage_context`: where the app keeps its vectors; the chunks are embedded with
    the run's model into it. Without either, an in-memory index. `trust_remote_code`: build a chunker or an
    adapter that is not ragtune's own from the run directory (off: a run directory from someone else could
    name any callable)."""
    run_dir = Path(run_dir)
    spec = read_spec(run_dir)
    if row is not None:
        rows = spec.get("rows", {})
        if row not in rows:
            raise RagtuneError(
                f"row={row!r} is not a retriever this run scored; it scored {', '.join(rows) or 'only its verdict'}."
            )
        spec = rows[row]
    spec = trusted(spec, run_dir, trust_remote_code)
    chosen = _nodes(spec, documents, nodes, run_dir)
    if vector_store is not None or storage_context is not None:
        chosen = [uuid_node(n) for n in chosen]
    for node in chosen:  # the run scored each chunk's text alone: keep metadata out of embeddings and BM25
        node.excluded_embed_metadata_keys = list(node.metadata)
    retrievers = []
    # as deep as the run ranked the row (a retriever.json from before similarity_top_k: the fusion's k, else 10)
    k = spec.get("similarity_top_k") or (spec["fusion"] or {}).get("top_k", 10)
    if spec["dense_model"]:
        from llama_index.core import StorageContext, VectorStoreIndex

        if storage_context is None and vector_store is not None:
            storage_context = StorageContext.from_defaults(vector_store=vector_store)
        index = VectorStoreIndex(chosen, embed_model=embedding(spec, run_dir, device), storage_context=storage_context)
        retrievers.append(index.as_retriever(similarity_top_k=k))
    if spec["bm25"]:
        retrievers.append(_bm25_retriever(chosen, spec["bm25"], k))
    if len(retrievers) == 1:
        return retrievers[0]
    from llama_index.core.llms import MockLLM
    from llama_index.core.retrievers import QueryFusionRetriever

    f = spec["fusion"]
    return QueryFusionRetriever(
        retrievers,
        mode=f["mode"],
        similarity_top_k=f["top_k"],
        num_queries=1,
        use_async=False,
        retriever_weights=[f["dense_weight"], 1 - f["dense_weight"]],
        llm=MockLLM(),
    )  # one query: no LLM writes extra queries


def _bm25_retriever(nodes, b: dict, k: int):
    """LlamaIndex's BM25Retriever with the run's tokenisation, k1 and b: the retriever tokenises the corpus as
    its own constructor does (`stopwords=language`, the stemmer, its token pattern) into a bm25s index built
    with k1 and b (its constructor takes no k1 or b, but takes an `existing_bm25`)."""
    import Stemmer
    from llama_index.core.schema import MetadataMode
    from llama_index.core.vector_stores.utils import node_to_metadata_dict
    from llama_index.retrievers.bm25 import BM25Retriever

    from runner.stages.evaluate.baselines import quiet_bm25s

    bm25s = quiet_bm25s()
    stemmer = Stemmer.Stemmer(b["language"])
    tokens = bm25s.tokenize(
        [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes],
        stopwords=b["language"] if b["stopwords"] else None,
        stemmer=stemmer if b["stemming"] else None,
        token_pattern=r"(?u)\b\w\w+\b",  # BM25Retriever's default
        show_progress=False,
    )
    index = bm25s.BM25(k1=b.get("k1", 1.5), b=b.get("b", 0.75))  # a retriever.json from before k1 / b: bm25s's
    index.index(tokens, show_progress=False)
    index.corpus = [node_to_metadata_dict(node) | {"node_id": node.node_id} for node in nodes]  # what it returns
    return BM25Retriever(existing_bm25=index, similarity_top_k=k, stemmer=stemmer, skip_stemming=not b["stemming"])


def model_card(verdict: dict, metric: str, *, config: dict, hashes: dict, choices: dict) -> str:
    """A markdown section for the saved model's README: the eval table, the verdict, the settings and
    the content hashes of the data it was trained and scored on."""
    lines = [
        "",
        "## ragtune evaluation",
        "",
        f"**Verdict: ship {verdict['deploy']}.** {verdict['reason']}",
        "",
        f"| retriever | {metric} | vs. the verdict's retriever [95% CI] | p |",
        "|---|---|---|---|",
    ]
    for name, score in verdict["scores"].items():
        c = verdict["vs_deploy"].get(name)
        vs = f"{c['delta']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]" if c else "—"
        lines.append(f"| {name} | {score:.4f} | {vs} | {c['p']:.3f} |" if c else f"| {name} | {score:.4f} | {vs} | |")
    lines += [
        "",
        "Settings chosen from data (never the eval set):",
        "",
        "```json",
        json.dumps({k: v.get("chosen") for k, v in choices.items() if isinstance(v, dict)}, indent=2, default=str),
        "```",
        "",
        "Data (SHA-256):",
        "",
    ]
    lines += [f"- {name}: `{digest}`" for name, digest in hashes.items()]
    lines += [
        "",
        "<details><summary>The run's config</summary>",
        "",
        "```json",
        json.dumps(config, indent=2, default=str),
        "```",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def add_model_card(model_dir: Path, section: str) -> None:
    readme = Path(model_dir) / "README.md"
    text = readme.read_text(encoding="utf-8") if readme.is_file() else "# ragtune model\n"
    write_text_atomic(text.rstrip() + "\n" + section, readme)
