"""Ship the verdict: what an app needs to rebuild the chosen retriever, and the call that rebuilds it.

A run writes `retriever.json` (the verdict, the model directory and its prompts, BM25's tokenisation, k1
and b, the fusion's mode, k and weights, all chosen before training or on the dev split) and a model card into the saved model.
`ragtune.load_retriever(run_dir, documents)` returns the retriever as LlamaIndex builds it: a
`VectorStoreIndex` retriever over the model (`local:<dir>` style), a `BM25Retriever`, or a
`QueryFusionRetriever` over both, the same settings the run scored.
"""

from __future__ import annotations

import json
from pathlib import Path

from runner.infra.atomic import write_json_atomic, write_text_atomic

RETRIEVER_FILE = "retriever.json"


def retriever_spec(
    verdict: dict,
    *,
    base_model: str,
    model_dir: str | None,
    prompts: dict,
    max_seq_length: int | None,
    bm25: dict | None,
    fusion: dict,
    chunker: dict,
    scores: dict,
) -> dict:
    deploy = verdict["deploy"]
    dense = None
    if deploy in ("base", "hybrid_base"):
        dense = base_model
    elif deploy in ("finetuned", "merged", "hybrid_finetuned"):
        dense = model_dir
    return {
        "deploy": deploy,
        "reason": verdict["reason"],
        "metric": verdict["metric"],
        "score": scores.get(deploy),
        "dense_model": dense,
        "query_prompt": prompts.get("query", ""),
        "passage_prompt": prompts.get("passage", ""),
        "max_seq_length": max_seq_length,
        "bm25": bm25 if deploy in ("bm25", "hybrid_base", "hybrid_finetuned") else None,
        "fusion": fusion.get(deploy) if deploy.startswith("hybrid") else None,
        "chunker": chunker,
    }


def settings(spec: dict) -> dict:
    """What the shipped retriever is built from, for the verdict in results.json and W&B."""
    return {"dense_model": spec["dense_model"], "bm25": spec["bm25"], "fusion": spec["fusion"]}


def settings_text(spec: dict) -> str:
    """One line: the model, BM25's tokenisation and the fusion the verdict ships."""
    parts = [f"model {spec['dense_model']}"] if spec["dense_model"] else []
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


def _nodes(spec: dict, documents, nodes):
    if nodes is not None:
        return list(nodes)
    if documents is None:
        raise ValueError(
            "give load_retriever the documents to search (llama-index Documents, chunked the run's way) "
            "or nodes (already chunked; their ids are what the retriever returns)"
        )
    from runner.stages.chunk.chunking import build_parser, chunk_documents
    from runner.stages.chunk.chunkers import fill_tiktoken_cache

    fill_tiktoken_cache()
    return chunk_documents(list(documents), build_parser(spec["chunker"]))


def load_retriever(run_dir: str | Path, documents=None, *, nodes=None, device: str | None = None):
    """The run's recommended retriever over `documents` (chunked with the run's chunker) or `nodes`."""
    spec = json.loads((Path(run_dir) / RETRIEVER_FILE).read_text())
    chosen = _nodes(spec, documents, nodes)
    for node in chosen:  # the run scored each chunk's text alone: keep metadata out of embeddings and BM25
        node.excluded_embed_metadata_keys = list(node.metadata)
    retrievers = []
    k = (spec["fusion"] or {}).get("top_k", 10)
    if spec["dense_model"]:
        from llama_index.core import VectorStoreIndex
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        embed = HuggingFaceEmbedding(
            model_name=spec["dense_model"],
            max_length=spec["max_seq_length"],
            query_instruction=spec["query_prompt"] or None,
            text_instruction=spec["passage_prompt"] or None,
            device=device,
        )
        retrievers.append(VectorStoreIndex(chosen, embed_model=embed).as_retriever(similarity_top_k=k))
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
    import bm25s
    import Stemmer
    from llama_index.core.schema import MetadataMode
    from llama_index.core.vector_stores.utils import node_to_metadata_dict
    from llama_index.retrievers.bm25 import BM25Retriever

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
