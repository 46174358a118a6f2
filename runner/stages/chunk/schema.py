"""The `chunker` group's schemas (one per option in conf/chunker/), and the checks of its knobs.

Kept cheap to import: `python -m runner --cfg job` reads these through `runner.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class SentenceChunker:
    _target_: str = "llama_index.core.node_parser.SentenceSplitter"
    chunk_size: Any = 128  # tiktoken tokens (llama-index's unit); auto: the base model's window in its word pieces
    chunk_overlap: int = 16
    fit_window: bool = True  # split again any chunk longer than the base model's window (its word pieces)


@dataclass
class TokenChunker:
    _target_: str = "llama_index.core.node_parser.TokenTextSplitter"
    chunk_size: Any = 128
    chunk_overlap: int = 16
    fit_window: bool = True  # split again any chunk longer than the base model's window (its word pieces)


@dataclass
class MarkdownChunker:
    _target_: str = "runner.stages.chunk.chunkers.markdown"
    chunk_size: Any = 128
    chunk_overlap: int = 16
    fit_window: bool = True  # split again any chunk longer than the base model's window (its word pieces)


@dataclass
class SemanticChunker:
    _target_: str = "runner.stages.chunk.chunkers.semantic"
    model: str = "${base_model.name_or_path}"  # the base model decides where meaning shifts
    buffer_size: int = 1
    breakpoint_percentile_threshold: int = 95
    chunk_size: Any = 128  # the cap applied after the semantic split
    chunk_overlap: int = 16
    fit_window: bool = True  # split again any chunk longer than the base model's window (its word pieces)
    device: str = "${device}"


CHUNKER = {"sentence": SentenceChunker, "token": TokenChunker, "markdown": MarkdownChunker, "semantic": SemanticChunker}


def problems(cfg) -> list[str]:
    """What the `chunker` group's types cannot say: a positive size (or auto), and an overlap below it."""
    ch = cfg.chunker
    if ch.chunk_size == "auto":
        if ch.chunk_overlap < 0:
            return [f"chunker.chunk_overlap={ch.chunk_overlap} must be at least 0"]
    elif isinstance(ch.chunk_size, bool) or not isinstance(ch.chunk_size, int) or ch.chunk_size <= 0:
        return [
            f"chunker.chunk_size={ch.chunk_size!r} must be a positive number of tiktoken tokens, or auto "
            "(the base model's window, in its word pieces)"
        ]
    elif not 0 <= ch.chunk_overlap < ch.chunk_size:
        return [f"chunker.chunk_overlap={ch.chunk_overlap} must be at least 0 and below chunker.chunk_size={ch.chunk_size}"]
    return []
