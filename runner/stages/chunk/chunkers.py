"""Chunkers that chain llama-index node parsers (built by `instantiate(cfg.chunker)`).

`chunk_documents` applies a list of parsers in turn, per document. `fill_tiktoken_cache` keeps
llama-index's token counting offline where TIKTOKEN_CACHE_DIR points elsewhere.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from runner.infra.atomic import copy_file_atomic

log = logging.getLogger("ragtune")


def markdown(chunk_size: int, chunk_overlap: int, tokenizer=None) -> list:
    """`MarkdownNodeParser` (one node per section, headers kept), then a `SentenceSplitter` cap:
    a section longer than chunk_size would otherwise be cut silently by the model. `tokenizer`
    counts the cap's units (None: tiktoken)."""
    from llama_index.core.node_parser import MarkdownNodeParser, SentenceSplitter

    return [MarkdownNodeParser(), SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=tokenizer)]


def semantic(
    model: str,
    buffer_size: int = 1,
    breakpoint_percentile_threshold: int = 95,
    chunk_size: int = 128,
    chunk_overlap: int = 16,
    device: str = "cpu",
    tokenizer=None,
) -> list:
    """`SemanticSplitterNodeParser` with the base model as its embedding model (loaded locally,
    "local:<dir>" style), then a `SentenceSplitter` cap: semantic chunks have no size limit."""
    from llama_index.core.node_parser import SemanticSplitterNodeParser, SentenceSplitter
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed = HuggingFaceEmbedding(model_name=model, device=None if device == "auto" else device)
    return [
        SemanticSplitterNodeParser(
            embed_model=embed, buffer_size=buffer_size, breakpoint_percentile_threshold=breakpoint_percentile_threshold
        ),
        SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, tokenizer=tokenizer),
    ]


def fill_tiktoken_cache() -> list[str]:
    """llama-index's splitters count tokens with tiktoken's cl100k_base, a file llama-index ships and
    points tiktoken at, unless TIKTOKEN_CACHE_DIR is set already (GPU images set it): a folder without
    that file means a download, which fails offline deep inside the chunker with a ConnectionError.
    Copy llama-index's cached files into that folder, as tiktoken itself would after a download
    (same name, same bytes); return the names copied. A folder we cannot write is a warning.
    """
    folder = os.environ.get("TIKTOKEN_CACHE_DIR")
    if not folder:
        return []
    import llama_index.core

    bundled = Path(llama_index.core.__file__).parent / "_static" / "tiktoken_cache"
    missing = [f for f in sorted(bundled.glob("*")) if f.is_file() and not (Path(folder) / f.name).exists()]
    copied = []
    for source in missing:
        try:
            copy_file_atomic(source, Path(folder) / source.name)
            copied.append(source.name)
        except OSError as e:
            log.warning(
                "TIKTOKEN_CACHE_DIR=%s lacks the tokenizer file llama-index ships (%s) and we cannot "
                "add it (%s): without network the chunker's token counting will fail. Unset "
                "TIKTOKEN_CACHE_DIR (llama-index then uses its own copy) or make the folder writable.",
                folder,
                source.name,
                e,
            )
            break
    if copied:
        log.info("added llama-index's tiktoken files %s to TIKTOKEN_CACHE_DIR=%s (no download needed)", copied, folder)
    return copied
