"""Stage `chunk`: Documents and a llama-index node parser in, TextNodes with stable ids out."""

from __future__ import annotations

from llama_index.core.schema import Document, TextNode

from runner.errors import RagtuneError
from runner.nodes import nodes_from_json, nodes_to_json


def chunk_corpus(loaded, chunker_cfg) -> dict:
    """The stage: the loaded corpus (`load.LoadedCorpus`) through the parser(s) `chunker_cfg` builds,
    duplicates dropped; {"nodes": [...], "counts": {...}}."""
    from hydra.utils import instantiate

    from runner.chunkers import fill_tiktoken_cache

    fill_tiktoken_cache()
    kept, dropped = drop_duplicate_chunks(chunk_documents(loaded.documents, instantiate(chunker_cfg)))
    return {"nodes": kept, "counts": {"documents": len(loaded.documents), "skipped_files": len(loaded.skipped),
                                      "duplicate_chunks_dropped": dropped, "chunks": len(kept)}}


def chunks_to_json(chunked: dict) -> dict:
    return {**chunked, "nodes": nodes_to_json(chunked["nodes"])}


def chunks_from_json(data: dict) -> dict:
    return {**data, "nodes": nodes_from_json(data["nodes"])}


def chunk_documents(documents: list[Document], parser) -> list[TextNode]:
    """Split each document with `parser` (a llama-index node parser, or a list applied in turn),
    with node ids `<document id>#<position>`: the same document and chunker give the same ids on
    every run (llama-index draws a random uuid per node), and every node's source is its document
    even after a chain of parsers (markdown sections, then a size cap).
    """
    from llama_index.core.schema import NodeRelationship

    parsers = list(parser) if isinstance(parser, (list, tuple)) else [parser]
    nodes: list[TextNode] = []
    for doc in documents:
        parts: list = [doc]
        for p in parsers:
            parts = p.get_nodes_from_documents(parts)
        parts = [n for n in parts if n.get_content().strip()]
        for i, n in enumerate(parts):
            n.id_ = f"{doc.id_}#{i:04d}"
            n.relationships = {NodeRelationship.SOURCE: doc.as_related_node_info()}
            nodes.append(n)
    if not nodes:
        raise RagtuneError(
            f"chunking {len(documents)} document(s) gave no non-empty chunk; check that the corpus "
            "holds text (corpus.*) and that chunker.chunk_size is positive."
        )
    return nodes


def drop_duplicate_chunks(nodes: list[TextNode]) -> tuple[list[TextNode], int]:
    """Keep the first node (by id) of each distinct text; return (kept, number dropped).

    Corpora repeat themselves (pydoc's `if` and `else` topics are the same text; `async` repeats a
    part of `compound`). A duplicate on both sides of the train / held-out split leaks the answer
    into training, and two identical chunks in the eval corpus tie for every query about them.
    """
    seen: set[str] = set()
    kept = []
    for n in sorted(nodes, key=lambda n: n.node_id):
        text = n.get_content()
        if text not in seen:
            seen.add(text)
            kept.append(n)
    order = {n.node_id: i for i, n in enumerate(nodes)}
    kept.sort(key=lambda n: order[n.node_id])
    return kept, len(nodes) - len(kept)
