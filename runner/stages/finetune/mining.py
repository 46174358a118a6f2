"""Encoding before training: mined hard negatives and the consistency filter, with the base model, at the
training's precision."""

from __future__ import annotations

import logging

from runner.infra.errors import RagtuneError
from runner.infra.models import autocast

log = logging.getLogger("ragtune")


def resolve_hard_negatives(num: int | None, pairs_from_file: bool) -> int:
    """`finetune.hard_negatives.num`; null (auto) is 1 for pairs read from a file and 0 for pairs
    generated in the run. One mined negative was the best recipe on every SciFact selection set (supervised
    dev +0.052 vs +0.046, offline -0.002 vs -0.027) but doubles training: worth it for pairs someone
    brought, not for the default run's generated ones, whose time budget it would break (README,
    "Choosing defaults")."""
    if num is not None:
        return int(num)
    return 1 if pairs_from_file else 0


def add_hard_negatives(dataset, model, num: int, relative_margin: float, range_max: int, batch_size: int):
    """Mine `num` hard negatives per pair with the base model (sentence-transformers'
    mine_hard_negatives). A negative must score below (1 - relative_margin) x the positive's score:
    near-duplicates of the positive are the same answer, not a negative."""
    from sentence_transformers.util import mine_hard_negatives

    return mine_hard_negatives(
        dataset,
        model,
        anchor_column_name="anchor",
        positive_column_name="positive",
        num_negatives=num,
        range_max=max(range_max, num + 1),
        relative_margin=relative_margin,
        sampling_strategy="top",
        output_format="n-tuple",
        batch_size=batch_size,
        query_prompt=model.prompts.get("query") or None,
        corpus_prompt=model.prompts.get("document") or None,
    )


def consistent_rows(dataset, model, top_k: int, batch_size: int):
    """Consistency filter (round-trip filtering: Alberti et al. 2019; Promptagator, Dai et al. 2022):
    keep a (query, passage) row only when the base model ranks that passage among the `top_k` of all
    training passages for the query. Queries that do not identify their passage (a generic sentence,
    a vague LLM question) teach the model to memorise noise."""
    from sentence_transformers.util import semantic_search

    passages = sorted(set(dataset["positive"]))
    position = {p: i for i, p in enumerate(passages)}
    queries = model.encode(
        dataset["anchor"],
        prompt=model.prompts.get("query") or None,
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
    )
    corpus = model.encode(
        passages,
        prompt=model.prompts.get("document") or None,
        batch_size=batch_size,
        convert_to_tensor=True,
        normalize_embeddings=True,
    )
    hits = semantic_search(queries, corpus, top_k=top_k)
    keep = [
        i
        for i, (row_hits, positive) in enumerate(zip(hits, dataset["positive"]))
        if position[positive] in {h["corpus_id"] for h in row_hits}
    ]
    return dataset.select(keep)


def mined(train_dataset, model, negatives: int, hard_negatives: dict, batch_size: int, n: int, precision: str, device: str):
    """The rows with `negatives` mined negatives each (auto falls back to the plain pairs when mining
    would cost half of them)."""
    pairs_only = train_dataset
    with autocast(precision, device):
        train_dataset = add_hard_negatives(
            train_dataset,
            model,
            negatives,
            float(hard_negatives.get("relative_margin", 0.05)),
            int(hard_negatives.get("range_max", 50)),
            batch_size,
        )
    log.info("finetune: %d pairs kept with %d mined hard negative(s) each", len(train_dataset), negatives)
    if hard_negatives.get("auto") and len(train_dataset) < max(batch_size, len(pairs_only) // 2):
        # auto must not cost the pairs someone brought: in-batch negatives only, as without it
        log.warning(
            "finetune: hard-negative mining (auto) kept %d of %d pairs; training on all pairs with "
            "in-batch negatives instead (finetune.hard_negatives.num=1 forces mining)",
            len(train_dataset),
            len(pairs_only),
        )
        return pairs_only
    if len(train_dataset) < batch_size:
        raise RagtuneError(
            f"hard-negative mining kept {len(train_dataset)} of {n} pairs (the others had no "
            f"negative below the margin), fewer than finetune.batch_size={batch_size}; lower "
            "finetune.hard_negatives.relative_margin or finetune.batch_size."
        )
    return train_dataset
