"""Stage `chunk`: Documents and a llama-index node parser in, TextNodes with stable ids out.

The base model's window is what it reads of a passage: base_model.max_seq_length when a number, else
the model's own, less its special tokens and the passage prompt, in the model's own word pieces.
`chunker.chunk_size` is a number of llama-index's unit, tiktoken tokens, or `auto`: chunks as long as
the window, counted in the model's word pieces. With a number, `chunker.fit_window: true` (the
default) splits again any chunk longer than the window (a SentenceSplitter in the model's word
pieces), so no chunk is cut silently by the model: tiktoken tokens and word pieces differ, by 1.3x
on the Python reference and more on code or other languages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from llama_index.core.schema import Document, TextNode

from runner.infra.errors import RagtuneError
from runner.data.nodes import nodes_from_json, nodes_to_json


@dataclass
class ChunkPlan:
    """How the chunker is built: `config` (chunk_size a number; what the stage's cache key holds),
    `tokenizer` (counts a text's units; None: llama-index's tiktoken) and the record for
    results.json `choices.chunk_size`."""

    config: dict
    tokenizer: Optional[Callable[[str], list]] = None
    record: dict = field(default_factory=dict)


def plan_chunks(
    chunker_cfg, model, model_id: str, revision: Optional[str] = None, name_or_path: Optional[str] = None
) -> ChunkPlan:
    """Resolve `chunker.chunk_size: auto` and `chunker.fit_window` against the loaded base model (`model_id`
    names its tokenizer in the cache key, `revision` its hub revision, `name_or_path` where it loads from); a
    number without fit_window passes."""
    from omegaconf import OmegaConf

    config = OmegaConf.to_container(chunker_cfg, resolve=True)
    fit = config.pop("fit_window", False)
    if config.get("chunk_size") != "auto" and not fit:
        size = config.get("chunk_size")
        return ChunkPlan(config, None, {"setting": size, "chosen": size, "unit": "tiktoken tokens"})
    tok = model.tokenizer
    window = int(model.max_seq_length)
    special = int(tok.num_special_tokens_to_add(pair=False))
    prompt_text = (getattr(model, "prompts", None) or {}).get("document", "")
    prompt = len(tok(prompt_text, add_special_tokens=False)["input_ids"]) if prompt_text else 0
    size = window - special - prompt
    named = {"id": model_id, "name_or_path": name_or_path, "revision": revision}
    room = (
        f"the base model reads {window} word pieces ({special} special"
        + (f", {prompt} for the passage prompt" if prompt else "")
        + ")"
    )
    overlap = config.get("chunk_overlap", 0) if config.get("chunk_size") == "auto" else 0
    if size <= max(overlap, 0):
        raise RagtuneError(
            f"chunker.chunk_size={config.get('chunk_size')} with the base model's window leaves {size} word pieces a "
            f"chunk (the model reads {window}, less {special} special tokens and {prompt} for the passage prompt), not "
            f"more than chunker.chunk_overlap={overlap}; give a longer base_model.max_seq_length, a smaller "
            "chunk_overlap, or chunker.fit_window=false with a number of tiktoken tokens."
        )
    if config.get("chunk_size") != "auto":  # a number, and a cap at the window
        config.update(fit_window={"chunk_size": size, "unit": "word pieces", "tokenizer": named})
        chosen = config["chunk_size"]
        return ChunkPlan(
            config,
            word_piece_counter(tok),
            {
                "setting": chosen,
                "chosen": chosen,
                "unit": "tiktoken tokens",
                "window_cap": size,
                "reason": f"{chosen} tiktoken tokens; {room}: a longer chunk is split again at {size} of them",
            },
        )
    config.update(chunk_size=size, unit="word pieces", tokenizer=named)
    record = {
        "setting": "auto",
        "chosen": size,
        "unit": "word pieces",
        "window": window,
        "special_tokens": special,
        "prompt_tokens": prompt,
        "reason": f"{room}: chunks of at most {size} of them are read whole",
    }
    return ChunkPlan(config, word_piece_counter(tok), record)


def word_piece_counter(tokenizer) -> Callable[[str], list]:
    """A llama-index splitter's `tokenizer`: a text's word pieces, without special tokens."""

    def count(text: str) -> list:
        return tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]

    return count


def build_parser(config: dict, tokenizer: Optional[Callable[[str], list]] = None):
    """The node parser(s) of a resolved chunker config (a plan's, or the one retriever.json ships); a
    config in word pieces without `tokenizer` loads the tokenizer it names."""
    from hydra.utils import instantiate
    from llama_index.core.node_parser import SentenceSplitter

    cap = config.get("fit_window")
    named = cap["tokenizer"] if cap else config.get("tokenizer")
    if named and tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = word_piece_counter(AutoTokenizer.from_pretrained(named["name_or_path"], revision=named.get("revision")))
    parser_config = {k: v for k, v in config.items() if k not in ("unit", "tokenizer", "fit_window")}
    if not cap:
        return instantiate(parser_config, **({"tokenizer": tokenizer} if config.get("unit") == "word pieces" else {}))
    parsers = instantiate(parser_config)
    parsers = list(parsers) if isinstance(parsers, (list, tuple)) else [parsers]
    return [*parsers, SentenceSplitter(chunk_size=cap["chunk_size"], chunk_overlap=0, tokenizer=tokenizer)]


def chunk_corpus(loaded, plan: ChunkPlan) -> dict:
    """The stage: the loaded corpus (`load.LoadedCorpus`) through the parser(s) the plan builds,
    duplicates dropped; {"nodes": [...], "counts": {...}}."""
    from runner.stages.chunk.chunkers import fill_tiktoken_cache

    fill_tiktoken_cache()
    kept, dropped = drop_duplicate_chunks(chunk_documents(loaded.documents, build_parser(plan.config, plan.tokenizer)))
    return {
        "nodes": kept,
        "counts": {
            "documents": len(loaded.documents),
            "skipped_files": len(loaded.skipped),
            "duplicate_chunks_dropped": dropped,
            "chunks": len(kept),
        },
    }


def chunks_to_json(chunked: dict) -> dict:
    return {**chunked, "nodes": nodes_to_json(chunked["nodes"])}


def chunks_from_json(data: dict) -> dict:
    return {**data, "nodes": nodes_from_json(data["nodes"])}


def chunk_documents(documents: list[Document], parser) -> list[TextNode]:
    """Split each document with `parser` (a llama-index node parser, or a list applied in turn), its text
    alone counted against the chunk size (`text_only`), with node ids `<document id>#<position>`: the same
    document and chunker give the same ids on every run (llama-index draws a random uuid per node), and
    every node's source is its document even after a chain of parsers (markdown sections, then a size cap).
    """
    from llama_index.core.schema import NodeRelationship

    parsers = list(parser) if isinstance(parser, (list, tuple)) else [parser]
    nodes: list[TextNode] = []
    for doc in documents:
        parts: list = [text_only(doc)]
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


def text_only(doc: Document) -> Document:
    """A copy of `doc` whose metadata counts for nothing: llama-index's splitters count the metadata text
    (`file_path: ...`, dates) against chunk_size, so the same text would split one way in the run and another
    in an app whose reader attaches other metadata. Chunks are sized on the text alone, everywhere; the
    metadata itself rides along on every node."""
    keys = list(doc.metadata)
    return doc.model_copy(update={"excluded_embed_metadata_keys": keys, "excluded_llm_metadata_keys": keys})


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
