"""Stage `generate`: train nodes and a generator config in, an `EmbeddingQAFinetuneDataset` out.

Every generator is a plain function `(nodes, **its config) -> EmbeddingQAFinetuneDataset`, built
with `hydra.utils.instantiate(cfg.qa_generator)` (a partial) and called by the runner.
"""

from __future__ import annotations

import random
import re

from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer
from llama_index.core.schema import TextNode

from runner.qa_file import EmbeddingQAFinetuneDataset, read_qa_dataset

_HAS_LETTERS = re.compile(r"[A-Za-z]{2,}")


def ict_pairs(
    nodes: list[TextNode],
    *,
    num_questions_per_chunk: int = 1,
    remove_prob: float = 0.9,
    min_query_words: int = 5,
    seed: int = 0,
) -> EmbeddingQAFinetuneDataset:
    """Inverse cloze task (Lee et al., 2019): a chunk's own sentences become its queries.

    Per chunk, a seeded choice of up to `num_questions_per_chunk` sentences with at least
    `min_query_words` words becomes queries; each is cut from the passage with probability
    `remove_prob`, so the model must match a sentence to its context rather than to a copy of itself.
    The passage is the chunk without the cut sentences (one passage per chunk, shared by its queries).
    Chunks with fewer than two sentences, or no sentence long enough, give no query.
    The random state is seeded by (seed, node id), so a chunk's queries do not depend on its neighbours.
    """
    split_sentences = split_by_sentence_tokenizer()
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    for node in sorted(nodes, key=lambda n: n.node_id):
        sentences = [s.strip() for s in split_sentences(node.get_content())]
        sentences = [s for s in sentences if s]
        candidates = [
            i for i, s in enumerate(sentences)
            if len(s.split()) >= min_query_words and _HAS_LETTERS.search(s)
        ]
        if len(sentences) < 2 or not candidates:
            continue
        rng = random.Random(f"{seed}:{node.node_id}")
        chosen = sorted(rng.sample(candidates, min(num_questions_per_chunk, len(candidates))))
        removed = {i for i in chosen if rng.random() < remove_prob}
        if len(removed) == len(sentences):  # never leave an empty passage
            removed.discard(chosen[-1])
        corpus[node.node_id] = " ".join(s for i, s in enumerate(sentences) if i not in removed)
        for j, i in enumerate(chosen):
            qid = f"{node.node_id}/q{j}"
            queries[qid] = sentences[i]
            relevant[qid] = [node.node_id]
    return EmbeddingQAFinetuneDataset(queries=queries, corpus=corpus, relevant_docs=relevant)


def pairs_from_file(nodes: list[TextNode] | None = None, *, path: str) -> EmbeddingQAFinetuneDataset:
    """Training pairs read from an `EmbeddingQAFinetuneDataset` JSON; the corpus nodes are unused."""
    return read_qa_dataset(path, key="qa_generator.path")
