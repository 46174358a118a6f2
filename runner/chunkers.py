"""Chunkers that chain llama-index node parsers (built by `instantiate(cfg.chunker)`).

`chunk_documents` applies a list of parsers in turn, per document.
"""

from __future__ import annotations


def markdown(chunk_size: int = 128, chunk_overlap: int = 16) -> list:
    """`MarkdownNodeParser` (one node per section, headers kept), then a `SentenceSplitter` cap:
    a section longer than chunk_size would otherwise be cut silently by the model."""
    from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

    return [MarkdownNodeParser(), SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)]


def semantic(model: str, buffer_size: int = 1, breakpoint_percentile_threshold: int = 95,
             chunk_size: int = 128, chunk_overlap: int = 16, device: str = "cpu") -> list:
    """`SemanticSplitterNodeParser` with the base model as its embedding model (loaded locally,
    "local:<dir>" style), then a `SentenceSplitter` cap: semantic chunks have no size limit."""
    from llama_index.core.node_parser import SemanticSplitterNodeParser, SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed = HuggingFaceEmbedding(model_name=model, device=None if device == "auto" else device)
    return [SemanticSplitterNodeParser(embed_model=embed, buffer_size=buffer_size,
                                       breakpoint_percentile_threshold=breakpoint_percentile_threshold),
            SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)]
