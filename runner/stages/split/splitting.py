"""Stage `split`: nodes in, (train nodes, held-out nodes) out, split by source file and seeded."""

from __future__ import annotations

import random

from llama_index.core.schema import TextNode

from runner.infra.errors import RagtuneError
from runner.data.nodes import nodes_from_json, nodes_to_json


def split_chunks(chunked: dict, *, val_fraction: float, seed: int, held_out: bool, dev_fraction: float, dev_seed: int) -> dict:
    """The stage: {"train": nodes, "dev": nodes, "held_out": nodes, "counts": the chunk counts and the
    split's}. Held-out documents first (without a held-out eval set every chunk trains), then dev
    documents from what is left: the documents every choice of the run is made on."""
    nodes = chunked["nodes"]
    train, held = split_by_document(nodes, val_fraction, seed) if held_out else (nodes, [])
    train, dev = split_by_document(train, dev_fraction, dev_seed, what="the dev split") if dev_fraction else (train, [])
    return {
        "train": train,
        "dev": dev,
        "held_out": held,
        "counts": {**chunked["counts"], "train_chunks": len(train), "dev_chunks": len(dev), "held_out_chunks": len(held)},
    }


def splits_to_json(parts: dict) -> dict:
    return {**parts, **{k: nodes_to_json(parts[k]) for k in ("train", "dev", "held_out")}}


def splits_from_json(data: dict) -> dict:
    return {**data, **{k: nodes_from_json(data[k]) for k in ("train", "dev", "held_out")}}


BLOCKS = 10  # a corpus of one file is split in up to this many runs of consecutive documents (pages)


def split_units(nodes: list[TextNode]) -> dict[str, str]:
    """{document id: the unit it is split with}. A unit is a source file: a reader that makes a document per
    PDF page or notebook cell gives one file many documents, and neighbouring pages share sentences and terms,
    so they must land on one side. Documents without a file (BEIR, the built-in corpus) are units of their
    own. A corpus of one file many documents long is cut into up to BLOCKS runs of consecutive documents."""
    file_of: dict[str, str] = {}
    for n in nodes:
        file_of.setdefault(n.ref_doc_id, str(n.metadata.get("file") or n.ref_doc_id))
    files = sorted(set(file_of.values()))
    if len(files) != 1 or len(file_of) < 2:
        return file_of
    docs = sorted(file_of)  # one file's documents, in page order (ids `<file>#<page>`, zero-padded)
    size = -(-len(docs) // min(BLOCKS, len(docs)))
    return {d: f"{files[0]}#block{i // size:02d}" for i, d in enumerate(docs)}


def split_by_document(
    nodes: list[TextNode], val_fraction: float, seed: int, what: str = "a held-out split"
) -> tuple[list[TextNode], list[TextNode]]:
    """Hold out whole source files (`split_units`), in a seeded order, until about `val_fraction` of the chunks
    are held out.

    Splitting by node would leak: neighbouring chunks of one document share sentences and terms, and so do
    neighbouring pages of one file, so a held-out chunk would be half-seen in training. The fraction counts
    chunks, not files, because files differ in size by orders of magnitude (pydoc topics: 200 to 62,000
    characters): a fifth of the files can be anything from 2% to 40% of the text. Units that would overshoot
    the target are skipped; at least one unit lands on each side.
    """
    unit_of = split_units(nodes)
    sizes: dict[str, int] = {}
    for n in nodes:
        sizes[unit_of[n.ref_doc_id]] = sizes.get(unit_of[n.ref_doc_id], 0) + 1
    units = sorted(sizes)
    if len(units) < 2:
        fix = (
            "add documents, or evaluate on a file with eval_set=file eval_set.path=VAL.json"
            if what == "a held-out split"
            else "add documents, name a dev file with dev.path=DEV.json, or turn the dev split off with dev.fraction=0"
        )
        raise RagtuneError(
            f"the corpus gave {len(units)} document(s) to train on, but {what} needs at least 2 "
            f"(one to train on, one to hold out); {fix}."
        )
    target = val_fraction * len(nodes)
    order = random.Random(seed).sample(units, len(units))
    held: set[str] = set()
    count = 0
    for unit in order[:-1]:  # the last one always trains
        if count + sizes[unit] <= target:
            held.add(unit)
            count += sizes[unit]
    if not held:
        held = {min(order[:-1], key=lambda u: sizes[u])}
    train = [n for n in nodes if unit_of[n.ref_doc_id] not in held]
    held_out = [n for n in nodes if unit_of[n.ref_doc_id] in held]
    return train, held_out


def carve_dev_pairs(pairs, fraction: float, seed: int):
    """Pairs read from a file: hold out about `fraction` of the queries as dev, whole groups of queries
    that share a passage at a time (no passage is a positive on both sides). Returns (training pairs,
    dev EvalSet); the dev queries are retrieved against every passage of the file."""
    from runner.data.eval_set import EvalSet
    from runner.data.pairs import EmbeddingQAFinetuneDataset

    parent: dict[str, str] = {}

    def root(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    answered = sorted(q for q, docs in pairs.relevant_docs.items() if docs)
    for q in answered:
        for d in pairs.relevant_docs[q]:
            parent[root(f"q:{q}")] = root(f"d:{d}")
    groups: dict[str, list[str]] = {}
    for q in answered:
        groups.setdefault(root(f"q:{q}"), []).append(q)
    if len(groups) < 2:
        raise RagtuneError(
            f"the training pairs form {len(groups)} group(s) of queries sharing passages, but a dev "
            "split needs at least 2; name a dev file with dev.path=DEV.json, or dev.fraction=0."
        )
    order = random.Random(seed).sample(sorted(groups), len(groups))
    target, dev = fraction * len(answered), []
    for g in order[:-1]:  # the last group always trains
        if len(dev) + len(groups[g]) <= target:
            dev += groups[g]
    if not dev:
        dev = min((groups[g] for g in order[:-1]), key=len)
    held = set(dev)
    train_q = {q: t for q, t in pairs.queries.items() if q not in held}
    train_rel = {q: d for q, d in pairs.relevant_docs.items() if q in train_q}
    used = {d for docs in train_rel.values() for d in docs}
    train = EmbeddingQAFinetuneDataset(
        queries=train_q, relevant_docs=train_rel, corpus={d: t for d, t in pairs.corpus.items() if d in used}
    )
    dev_set = EvalSet(
        {q: pairs.queries[q] for q in sorted(held)}, dict(pairs.corpus), {q: list(pairs.relevant_docs[q]) for q in sorted(held)}
    )
    return train, dev_set
