"""Stage `split`: nodes in, (train nodes, held-out nodes) out, split by source file and seeded, with the
documents whose text overlaps kept on one side (`overlap_groups`)."""

from __future__ import annotations

import hashlib
import logging
import random
import re

from llama_index.core.schema import TextNode

from runner.infra.errors import RagtuneError
from runner.data.nodes import nodes_from_json, nodes_to_json

log = logging.getLogger("ragtune")
LONG_SENTENCE = 40  # characters: a sentence this long that two documents share is text one copied from the other
NEAR_DUPLICATE = 0.5  # MinHash-estimated Jaccard of word 5-gram shingles: a file and its edited copy
SHINGLE = 5
# a sentence in more documents than this share of them (at least 3) is a template's (a licence header, a
# footer), not text one document took from another: it groups nothing, or one such line would glue a whole
# folder into one group that no split can cut
BOILERPLATE_SHARE = 0.1


def split_chunks(chunked: dict, *, val_fraction: float, seed: int, held_out: bool, dev_fraction: float, dev_seed: int) -> dict:
    """The stage: {"train": nodes, "dev": nodes, "held_out": nodes, "counts": the chunk counts and the
    split's}. Held-out documents first (without a held-out eval set every chunk trains), then dev
    documents from what is left: the documents every choice of the run is made on."""
    nodes = chunked["nodes"]
    groups = overlap_groups(nodes)
    train, held = split_by_document(nodes, val_fraction, seed, groups=groups) if held_out else (nodes, [])
    train, dev = (
        split_by_document(train, dev_fraction, dev_seed, what="the dev split", groups=groups) if dev_fraction else (train, [])
    )
    members: dict[str, int] = {}
    for g in groups.values():
        members[g] = members.get(g, 0) + 1
    grouped = {g: n for g, n in members.items() if n > 1}
    if grouped:
        log.info(
            "split: %d documents share text with others (a sentence of %d+ characters, or near-duplicates): kept "
            "together in %d groups, each on one side of every split",
            sum(grouped.values()),
            LONG_SENTENCE,
            len(grouped),
        )
    counts = {"train_chunks": len(train), "dev_chunks": len(dev), "held_out_chunks": len(held)}
    counts |= {"documents_grouped": sum(grouped.values()), "overlap_groups": len(grouped)}
    return {"train": train, "dev": dev, "held_out": held, "counts": {**chunked["counts"], **counts}}


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


def sentences(text: str) -> list[str]:
    """The sentences of `text` (split at sentence ends and blank lines), whitespace collapsed."""
    return [re.sub(r"\s+", " ", s).strip() for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", text) if s.strip()]


def overlap_groups(nodes: list[TextNode]) -> dict[str, str]:
    """{split unit (`split_units`): its group}: units whose text overlaps share a group, so that a split never
    puts one on each side. Two units overlap when they share a sentence of LONG_SENTENCE characters or more
    (a topic quoted inside another: the Python reference's `class` lies whole inside `compound`), or when
    MinHash LSH (datasketch) estimates the Jaccard similarity of their word 5-gram shingles at NEAR_DUPLICATE or
    more (a file and its edited copy, where no sentence is left as it was). Transitively: a chain is one group."""
    unit_of = split_units(nodes)
    text: dict[str, list[str]] = {}
    for n in nodes:
        text.setdefault(unit_of[n.ref_doc_id], []).append(n.get_content())
    units = sorted(text)
    parent = {u: u for u in units}

    def root(u: str) -> str:
        while parent[u] != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    def join(a: str, b: str) -> None:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    owners: dict[str, list[str]] = {}
    for u in units:
        # a chunk starts and ends mid-sentence: its first and last pieces are a sentence's end and start, so a
        # sentence is known by its first and its last LONG_SENTENCE characters, which its pieces share with it
        long = {s for chunk in text[u] for s in sentences(chunk) if len(s) >= LONG_SENTENCE}
        for key in {k for s in long for k in (s[:LONG_SENTENCE], s[-LONG_SENTENCE:])}:
            owners.setdefault(hashlib.blake2b(key.encode(), digest_size=12).hexdigest(), []).append(u)
    most = max(3, BOILERPLATE_SHARE * len(units))
    for shared in owners.values():
        if 1 < len(shared) <= most:
            for u in shared[1:]:
                join(shared[0], u)
    for a, b in near_duplicates({u: " ".join(text[u]) for u in units}):
        join(a, b)
    return {u: root(u) for u in units}


def near_duplicates(texts: dict[str, str]) -> list[tuple[str, str]]:
    """Pairs of texts whose word 5-gram shingles (lowercased words, punctuation dropped) have an estimated
    Jaccard similarity of NEAR_DUPLICATE or more (MinHash LSH, datasketch; 128 permutations, seeded: the same
    pairs every run)."""
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=NEAR_DUPLICATE, num_perm=128)
    pairs = []
    for key in sorted(texts):
        words = re.findall(r"\w+", texts[key].lower())  # punctuation and layout aside: a reformatted copy matches
        shingles = {" ".join(words[i : i + SHINGLE]) for i in range(max(1, len(words) - SHINGLE + 1))}
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in shingles])
        pairs += [(other, key) for other in lsh.query(m)]
        lsh.insert(key, m)
    return pairs


def split_by_document(
    nodes: list[TextNode], val_fraction: float, seed: int, what: str = "a held-out split", groups: dict | None = None
) -> tuple[list[TextNode], list[TextNode]]:
    """Hold out whole source files (`split_units`), in a seeded order, until about `val_fraction` of the chunks
    are held out; `groups` ({unit: group}, `overlap_groups`): files whose text overlaps go together.

    Splitting by node would leak: neighbouring chunks of one document share sentences and terms, and so do
    neighbouring pages of one file, so a held-out chunk would be half-seen in training. The fraction counts
    chunks, not files, because files differ in size by orders of magnitude (pydoc topics: 200 to 62,000
    characters): a fifth of the files can be anything from 2% to 40% of the text. Units that would overshoot
    the target are skipped; at least one unit lands on each side.
    """
    units_of = split_units(nodes)
    unit_of = {d: (groups or {}).get(u, u) for d, u in units_of.items()}
    if len(set(unit_of.values())) < 2 <= len(set(units_of.values())):
        log.warning(
            "split: every document of %s shares text with another (a sentence of %d+ characters, or near-duplicates), "
            "so no split keeps them apart: split by document alone, and the held-out questions' passages share text "
            "with training (their scores read high); give documents that do not copy each other, or an eval file "
            "(eval_set=file)",
            "the corpus" if what == "a held-out split" else "the training side",
            LONG_SENTENCE,
        )
        unit_of = dict(units_of)
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
    if not held:  # every unit overshoots: the smallest goes (a group of copies may be most of the corpus)
        held = {min(units, key=lambda u: (sizes[u], u))}
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
