"""Stage `generate`: train nodes and a generator config in, an `EmbeddingQAFinetuneDataset` out.

Every generator is a plain function `(nodes, **its config) -> EmbeddingQAFinetuneDataset`, built
with `hydra.utils.instantiate(cfg.qa_generator)` (a partial) and called by the runner.
"""

from __future__ import annotations

import math
import random
import re
from collections import Counter
from collections.abc import Mapping

from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer
from llama_index.core.schema import TextNode

from runner.data.pairs import EmbeddingQAFinetuneDataset, read_qa_dataset

_HAS_LETTERS = re.compile(r"[A-Za-z]{2,}")


def generate_pairs(nodes: list[TextNode], generator, report: dict | None = None) -> EmbeddingQAFinetuneDataset:
    """The stage: `generator(nodes, report=...)` (the partial `instantiate(cfg.qa_generator)` builds).

    Every generator has this signature: the nodes, its own settings as keywords, and `report`, a dict
    for the counts the run records (the LLM generator's chunks sent, failed and reused; the offline
    generators and a file have none to add)."""
    return generator(nodes, report=report)


def ict_pairs(
    nodes: list[TextNode],
    *,
    num_questions_per_chunk: int = 1,
    remove_prob: float = 0.9,
    min_query_words: int = 5,
    seed: int,
    report: dict | None = None,
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
        candidates = [i for i, s in enumerate(sentences) if len(s.split()) >= min_query_words and _HAS_LETTERS.search(s)]
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


def title_pairs(nodes: list[TextNode], *, min_title_words: int = 2, report: dict | None = None) -> EmbeddingQAFinetuneDataset:
    """Title queries, offline: a document's title is the query for each of its chunks.

    Titles come from the loaders (metadata `title`): BEIR titles, the Python reference's underlined
    topic headings, a markdown file's `# ` first line. The title (and its underline) is cut from the
    start of a passage, so the match is about meaning, not a copy. Documents without a title, or
    with one shorter than `min_title_words`, give no query.
    """
    by_doc: dict[str, list[TextNode]] = {}
    for node in sorted(nodes, key=lambda n: n.node_id):
        by_doc.setdefault(node.ref_doc_id or node.node_id, []).append(node)
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    for doc, chunks in by_doc.items():
        title = str(chunks[0].metadata.get("title") or "").strip()
        if len(title.split()) < min_title_words:
            continue
        docs = []
        for node in chunks:
            text = node.get_content().strip()
            if text.startswith(title):
                text = _UNDERLINE_START.sub("", text[len(title) :]).strip()
            if text:
                corpus[node.node_id] = text
                docs.append(node.node_id)
        if docs:
            queries[f"{doc}/title"], relevant[f"{doc}/title"] = title, docs
    return EmbeddingQAFinetuneDataset(queries=queries, corpus=corpus, relevant_docs=relevant)


_UNDERLINE_START = re.compile(r"^\s*\n?[*=\-~^#]{3,}[ \t]*\n?")


def mixed_pairs(nodes: list[TextNode], *, generators, report: dict | None = None) -> EmbeddingQAFinetuneDataset:
    """The union of several generators' pairs on the same chunks (e.g. ICT sentences and titles).

    A chunk whose passage differs between generators (ICT cuts its query sentence, titles cut the
    title) gets one corpus entry per version, `<chunk id>` for the first and `<chunk id>@<i>` after.
    """
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    for i, generator in enumerate(generators.values() if isinstance(generators, Mapping) else generators):
        ds = generator(nodes, report=report)
        rename = {}
        for doc_id, text in ds.corpus.items():
            new = doc_id if corpus.get(doc_id, text) == text else f"{doc_id}@{i}"
            corpus[new], rename[doc_id] = text, new
        for qid, query in ds.queries.items():
            key = qid if qid not in queries else f"{qid}@{i}"
            queries[key] = query
            relevant[key] = [rename[d] for d in ds.relevant_docs.get(qid, [])]
    return EmbeddingQAFinetuneDataset(queries=queries, corpus=corpus, relevant_docs=relevant)


def pairs_from_file(
    nodes: list[TextNode] | None = None, *, path: str, split: str, report: dict | None = None
) -> EmbeddingQAFinetuneDataset:
    """Training pairs read from an `EmbeddingQAFinetuneDataset` JSON, or from a BEIR folder's
    `qrels/<split>.tsv` (each judged query with its documents of grade > 0); the corpus nodes are unused."""
    from pathlib import Path

    if Path(path).is_dir():
        from runner.data.beir import read_beir

        beir = read_beir(path, split, key="qa_generator.path")
        relevant = {q: sorted(d for d, g in grades.items() if g > 0) for q, grades in beir["grades"].items()}
        used = {d for docs in relevant.values() for d in docs}
        return EmbeddingQAFinetuneDataset(
            queries=beir["queries"], relevant_docs=relevant, corpus={d: beir["corpus"][d] for d in sorted(used)}
        )
    return read_qa_dataset(path, key="qa_generator.path")


_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_]+")


def keyword_pairs(
    nodes: list[TextNode],
    *,
    num_questions_per_chunk: int,
    min_keywords: int,
    max_keywords: int,
    pool: int,
    seed: int,
    report: dict | None = None,
) -> EmbeddingQAFinetuneDataset:
    """Keyword queries, offline: what a user types into a search box, not a sentence from the text.

    Each chunk's words are scored by TF-IDF over the given chunks (stopwords and one- or two-letter
    words out); per query, between `min_keywords` and `max_keywords` of the chunk's `pool` best words
    are drawn, weighted by score, and kept in the order they first appear in the chunk. The passage
    is the whole chunk. Chunks with fewer than `min_keywords` candidate words give no query. The
    random state is seeded by (seed, node id), as in `ict_pairs`.
    """
    from llama_index.core.utils import globals_helper

    stop = set(globals_helper.stopwords)
    ordered = sorted(nodes, key=lambda n: n.node_id)
    words = {
        n.node_id: [w for w in (m.lower() for m in _WORD.findall(n.get_content())) if len(w) > 2 and w not in stop]
        for n in ordered
    }
    df = Counter(w for ws in words.values() for w in set(ws))
    idf = {w: math.log(len(ordered) / c) + 1.0 for w, c in df.items()}
    queries: dict[str, str] = {}
    corpus: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    for node in ordered:
        if len(set(words[node.node_id])) < min_keywords:
            continue
        best, score, first = _best_words(words[node.node_id], idf, pool)
        rng = random.Random(f"{seed}:{node.node_id}")
        seen: set[str] = set()
        for j in range(num_questions_per_chunk):
            k = rng.randint(min_keywords, min(max_keywords, len(best)))
            query = " ".join(sorted(_weighted_draw(rng, best, score, k), key=first.__getitem__))
            if query in seen:
                continue
            seen.add(query)
            qid = f"{node.node_id}/k{j}"
            queries[qid], relevant[qid] = query, [node.node_id]
            corpus[node.node_id] = node.get_content()
    return EmbeddingQAFinetuneDataset(queries=queries, corpus=corpus, relevant_docs=relevant)


def _best_words(words: list[str], idf: dict[str, float], pool: int) -> tuple[list[str], dict[str, float], dict[str, int]]:
    """(the `pool` best of a chunk's words by TF-IDF, ties to the first to appear; each word's
    score; each word's first position)."""
    tf = Counter(words)
    first = {}
    for i, w in enumerate(words):
        first.setdefault(w, i)
    score = {w: (1 + math.log(c)) * idf[w] for w, c in tf.items()}
    return sorted(tf, key=lambda w: (-score[w], first[w]))[:pool], score, first


def _weighted_draw(rng: random.Random, best: list[str], score: dict[str, float], k: int) -> list[str]:
    """`k` of `best`, drawn without replacement, each draw weighted by score."""
    weights = [score[w] for w in best]
    picked: list[str] = []
    candidates = list(best)
    while len(picked) < k:
        w = rng.choices(candidates, weights=weights)[0]
        i = candidates.index(w)
        candidates.pop(i), weights.pop(i)
        picked.append(w)
    return picked
