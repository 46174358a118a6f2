"""Stage `split`: nodes in, (train nodes, held-out nodes) out, split by document and seeded."""

from __future__ import annotations

import random

from llama_index.core.schema import TextNode

from runner.errors import RagtuneError


def split_by_document(
    nodes: list[TextNode], val_fraction: float, seed: int
) -> tuple[list[TextNode], list[TextNode]]:
    """Hold out a seeded `val_fraction` of the documents (at least one), with all of their nodes.

    Splitting by node would leak: neighbouring chunks of one document share sentences and terms,
    so a held-out chunk would be half-seen in training.
    """
    doc_ids = sorted({n.ref_doc_id for n in nodes})
    if len(doc_ids) < 2:
        raise RagtuneError(
            f"the corpus gave {len(doc_ids)} document(s), but a held-out split needs at least 2 "
            "(one to train on, one to evaluate on); add documents, or evaluate on a file with "
            "eval_set=file eval_set.path=VAL.json."
        )
    n_held = min(len(doc_ids) - 1, max(1, round(val_fraction * len(doc_ids))))
    held = set(random.Random(seed).sample(doc_ids, n_held))
    train = [n for n in nodes if n.ref_doc_id not in held]
    held_out = [n for n in nodes if n.ref_doc_id in held]
    return train, held_out
