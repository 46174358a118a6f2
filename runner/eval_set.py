"""The eval set: queries, the corpus they are retrieved from, and which documents answer them.

Built from held-out documents by the question generator (stage `eval_set`, cached), or read from
a llama-index dataset file or a BEIR folder (read every run: reading costs less than a key would).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass


@dataclass
class EvalSet:
    queries: dict[str, str]  # query id -> text
    corpus: dict[str, str]  # doc id -> text
    relevant_docs: dict[str, list[str]]  # query id -> relevant doc ids (grade > 0)
    grades: dict[str, dict[str, float]] | None = None  # query id -> {doc id: grade}, when graded

    def answered_query_ids(self) -> list[str]:
        return [q for q in self.queries if self.relevant_docs.get(q)]

    def digest(self) -> str:
        """SHA-256 of the whole set: what a key over its evaluation must change with."""
        blob = json.dumps([self.queries, self.corpus, self.relevant_docs, self.grades], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def corpus_digest(self) -> str:
        h = hashlib.sha256()
        for doc_id in sorted(self.corpus):
            h.update(doc_id.encode() + b"\0" + self.corpus[doc_id].encode() + b"\0")
        return h.hexdigest()


def eval_set_to_json(eval_set: EvalSet) -> dict:
    return dict(eval_set.__dict__)


def eval_set_from_json(data: dict) -> EvalSet:
    return EvalSet(**data)


def held_out_eval_set(held_out_nodes, generator, report: dict | None = None) -> EvalSet:
    """The stage: questions from held-out chunks, retrieved against every held-out chunk (the others
    are distractors)."""
    from runner.generate import generate_pairs

    ds = generate_pairs(held_out_nodes, generator, report)
    corpus = {n.node_id: ds.corpus.get(n.node_id, n.get_content()) for n in held_out_nodes}
    return EvalSet(dict(ds.queries), corpus, dict(ds.relevant_docs))


def read_eval_set(eval_cfg, counts: dict, key: str = "eval_set.path") -> EvalSet:
    """eval_set=beir (a BEIR folder's split, graded) or eval_set=file (an EmbeddingQAFinetuneDataset)."""
    if eval_cfg.kind == "beir":
        from runner.beir import read_beir

        beir = read_beir(eval_cfg.path, eval_cfg.split, key=key)
        counts.update({f"eval_{k}": v for k, v in beir["counts"].items()})
        relevant = {q: [d for d, g in grades.items() if g > 0] for q, grades in beir["grades"].items()}
        return EvalSet(beir["queries"], beir["corpus"], relevant, beir["grades"])
    from runner.qa_file import read_qa_dataset

    ds = read_qa_dataset(eval_cfg.path, key=key)
    return EvalSet(dict(ds.queries), dict(ds.corpus), dict(ds.relevant_docs))
