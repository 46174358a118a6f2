"""Stage `split`: nodes in, (train nodes, held-out nodes) out, split by document and seeded."""

from __future__ import annotations

import random

from llama_index.core.schema import TextNode

from runner.errors import RagtuneError
from runner.nodes import nodes_from_json, nodes_to_json


def split_chunks(chunked: dict, *, val_fraction: float, seed: int, held_out: bool) -> dict:
    """The stage: {"train": nodes, "held_out": nodes, "counts": the chunk counts and the split's}.
    Without a held-out eval set every chunk trains."""
    nodes = chunked["nodes"]
    train, held = split_by_document(nodes, val_fraction, seed) if held_out else (nodes, [])
    return {"train": train, "held_out": held,
            "counts": {**chunked["counts"], "train_chunks": len(train), "held_out_chunks": len(held)}}


def splits_to_json(parts: dict) -> dict:
    return {**parts, "train": nodes_to_json(parts["train"]), "held_out": nodes_to_json(parts["held_out"])}


def splits_from_json(data: dict) -> dict:
    return {**data, "train": nodes_from_json(data["train"]), "held_out": nodes_from_json(data["held_out"])}


def split_by_document(
    nodes: list[TextNode], val_fraction: float, seed: int
) -> tuple[list[TextNode], list[TextNode]]:
    """Hold out whole documents, in a seeded order, until about `val_fraction` of the chunks are held out.

    Splitting by node would leak: neighbouring chunks of one document share sentences and terms,
    so a held-out chunk would be half-seen in training. The fraction counts chunks, not documents,
    because documents differ in size by orders of magnitude (pydoc topics: 200 to 62,000 characters):
    a fifth of the documents can be anything from 2% to 40% of the text. Documents that would
    overshoot the target are skipped; at least one document lands on each side.
    """
    sizes: dict[str, int] = {}
    for n in nodes:
        sizes[n.ref_doc_id] = sizes.get(n.ref_doc_id, 0) + 1
    doc_ids = sorted(sizes)
    if len(doc_ids) < 2:
        raise RagtuneError(
            f"the corpus gave {len(doc_ids)} document(s), but a held-out split needs at least 2 "
            "(one to train on, one to evaluate on); add documents, or evaluate on a file with "
            "eval_set=file eval_set.path=VAL.json."
        )
    target = val_fraction * len(nodes)
    order = random.Random(seed).sample(doc_ids, len(doc_ids))
    held: set[str] = set()
    count = 0
    for doc in order[:-1]:  # the last one always trains
        if count + sizes[doc] <= target:
            held.add(doc)
            count += sizes[doc]
    if not held:
        held = {min(order[:-1], key=lambda d: sizes[d])}
    train = [n for n in nodes if n.ref_doc_id not in held]
    held_out = [n for n in nodes if n.ref_doc_id in held]
    return train, held_out
