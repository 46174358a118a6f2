"""The eval set: queries, the corpus they are retrieved from, and which documents answer them, with
its JSON codec (the cache entry of the `eval_set` and `dev_set` stages). Built by
`runner.stages.evaluate.eval_sets`; read by every step that scores a retriever.
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
        """SHA-256 of the whole set, the order of its queries included: every per-query array (intervals,
        p-values, the verdict, per_query.csv) pairs rows by position, so the same questions in another order
        are another set to a cache key. The corpus and the judgements are hashed by id, in any order."""
        blob = json.dumps([list(self.queries.items()), self.corpus, self.relevant_docs, self.grades], sort_keys=True)
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
