"""The training losses: MultipleNegativesRankingLoss and its cached and Matryoshka forms, with their knobs."""

from __future__ import annotations

from runner.infra.errors import RagtuneError

LOSSES = ("mnrl", "cached_mnrl", "matryoshka")
DIRECTIONS = ("query_to_doc", "doc_to_query", "query_to_query", "doc_to_doc")


def directions_problem(directions) -> str | None:
    """What is wrong with `finetune.directions`, or None (checked up front by validate, and here)."""
    if "query_to_doc" in directions and not set(directions) - set(DIRECTIONS):
        return None
    return (
        f"finetune.directions={list(directions)} must include query_to_doc and only name "
        f"{', '.join(DIRECTIONS)} (try [query_to_doc,doc_to_query])"
    )


def build_loss(
    model,
    loss: str,
    mini_batch_size: int,
    matryoshka_dims: list[int],
    *,
    scale: float = 20.0,
    directions: list[str] = ("query_to_doc",),
    hardness_strength: float = 0.0,
):
    """mnrl: in-batch negatives; cached_mnrl: the same loss with gradient caching, so a batch of
    thousands fits in memory (mini_batch_size at a time); matryoshka: MNRL at several truncated
    dimensions, so the embeddings can be cut down later.

    All three take sentence-transformers' MNRL knobs: `scale` (1 / temperature), `directions`
    (query_to_doc always; doc_to_query makes it symmetric) and `hardness_strength` (> 0 weights
    in-batch negatives by how hard they are, Lan et al. 2025; they use 9). None costs an extra encoding.
    """
    from sentence_transformers.sentence_transformer import losses

    problem = directions_problem(directions)
    if problem:
        raise RagtuneError(problem + ".")
    knobs = {"scale": scale, "directions": tuple(directions)}
    if hardness_strength > 0:
        knobs.update(hardness_mode="in_batch_negatives", hardness_strength=hardness_strength)
    if loss == "mnrl":
        return losses.MultipleNegativesRankingLoss(model, **knobs)
    if loss == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=mini_batch_size, **knobs)
    dim = model.get_embedding_dimension()
    too_big = [d for d in matryoshka_dims if d > dim]
    if too_big or not matryoshka_dims:
        raise RagtuneError(
            f"finetune.matryoshka_dims={list(matryoshka_dims)} must be non-empty and at most the model's "
            f"{dim} dimensions; use for example finetune.matryoshka_dims=[{dim},{dim // 2},{dim // 4}]."
        )
    return losses.MatryoshkaLoss(
        model, losses.MultipleNegativesRankingLoss(model, **knobs), matryoshka_dims=list(matryoshka_dims)
    )
