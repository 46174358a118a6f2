"""Read a BEIR folder: `corpus.jsonl`, `queries.jsonl`, `qrels/<split>.tsv` (graded judgements)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from runner.infra.errors import RagtuneError


def _jsonl(path: Path, key: str) -> list[dict]:
    if not path.is_file():
        raise RagtuneError(f"{key}: {path} is missing; a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv.")
    rows = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise RagtuneError(f"{key}: {path} line {n} is not JSON ({err}); fix or remove the line.") from None
    return rows


def read_corpus_titled(root: Path, key: str) -> dict[str, tuple[str, str]]:
    """corpus.jsonl as {id: (title, "title text")}: title, a space, then text, as BEIR and MTEB feed it."""
    if not Path(root).is_dir():
        raise RagtuneError(f"{key}={root} is not a directory; give a BEIR folder (corpus.jsonl, ...).")
    out = {}
    for n, d in enumerate(_jsonl(Path(root) / "corpus.jsonl", key), 1):
        _check_row(d, n, Path(root) / "corpus.jsonl", key, "title", "text")
        title = str(d.get("title") or "").strip()
        out[str(d["_id"])] = (title, f"{d.get('title', '')} {d.get('text', '')}".strip())
    return out


def _check_row(row, n: int, path: Path, key: str, *text_fields: str) -> None:
    """A corpus or queries line is an object with an `_id` and text fields that are strings (n counts the
    file's non-empty lines)."""
    if not isinstance(row, dict) or "_id" not in row:
        raise RagtuneError(
            f'{key}: {path}, record {n}, has no "_id" (it reads {json.dumps(row)[:80]}); every line of a BEIR '
            'file is an object like {"_id": "d1", "title": "...", "text": "..."}.'
        )
    wrong = [f for f in text_fields if row.get(f) is not None and not isinstance(row[f], str)]
    if wrong:
        raise RagtuneError(
            f'{key}: {path}, record {n} (_id {row["_id"]!r}): "{wrong[0]}" is {type(row[wrong[0]]).__name__}, '
            "not text; fix the line."
        )


def read_corpus(root: Path, key: str) -> dict[str, str]:
    """corpus.jsonl as {id: "title text"}."""
    return {i: text for i, (_, text) in read_corpus_titled(root, key).items()}


def read_beir(path: str | Path, split: str, key: str = "eval_set.path") -> dict:
    """{"corpus": {id: "title text"}, "queries": {id: text}, "grades": {qid: {doc id: grade}},
    "counts": {...}}. Document text is title, a space, then text, as BEIR and MTEB feed it to a model.

    Only queries judged in `split` are kept; those whose judgements are all 0 are dropped and counted.
    """
    root = Path(path)
    if not root.is_dir():
        raise RagtuneError(
            f"{key}={root} is not a directory; give a BEIR folder (corpus.jsonl, queries.jsonl, qrels/<split>.tsv)."
        )
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        have = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise RagtuneError(
            f"{key}={root} has no qrels/{split}.tsv; splits found: {have or 'none'}. Set the split to one of them."
        )
    corpus = read_corpus(root, key)
    rows = _jsonl(root / "queries.jsonl", key)
    for n, q in enumerate(rows, 1):
        _check_row(q, n, root / "queries.jsonl", key, "text")
    all_queries = {str(q["_id"]): q.get("text") or "" for q in rows}
    grades: dict[str, dict[str, float]] = {}
    with qrels_path.open(encoding="utf-8") as f:
        reader = csv.reader(f, delimiter="\t")
        for n, row in enumerate(reader, 1):
            if n == 1 and not row[-1].lstrip("-").isdigit():
                continue  # header line
            if len(row) < 3:
                raise RagtuneError(f"{qrels_path} line {n} has {len(row)} columns, not 3 (query-id, corpus-id, score).")
            try:
                grades.setdefault(row[0], {})[row[1]] = float(row[2])
            except ValueError:
                raise RagtuneError(
                    f"{qrels_path} line {n}: the score {row[2]!r} is not a number; a qrels line is query-id, "
                    "corpus-id and a numeric grade (0 = not relevant), separated by tabs."
                ) from None
    missing_docs = sorted({d for g in grades.values() for d in g if d not in corpus})
    missing_queries = sorted(q for q in grades if q not in all_queries)
    if missing_docs or missing_queries:
        raise RagtuneError(
            f"{qrels_path} names {len(missing_docs)} document(s) missing from corpus.jsonl "
            f"(first: {missing_docs[:3]}) and {len(missing_queries)} query(ies) missing from "
            f"queries.jsonl (first: {missing_queries[:3]}); the folder is incomplete or mixes data sets."
        )
    judged = {q: g for q, g in grades.items() if any(v > 0 for v in g.values())}
    if not judged:
        raise RagtuneError(f"{qrels_path} has no query with a relevant document (score > 0): nothing to evaluate.")
    return {
        "corpus": corpus,
        "queries": {q: all_queries[q] for q in judged},
        "grades": judged,
        "counts": {"queries_without_relevant": len(grades) - len(judged), "queries_not_in_split": len(all_queries) - len(grades)},
    }


def beir_problems(path: str | Path, split: str, key: str) -> list[str]:
    """Read a BEIR folder now, so a bad one fails before hours of work rather than after: what is wrong
    with it, as config problems (none if it reads)."""
    try:
        read_beir(path, split, key=key)
    except RagtuneError as err:
        return [str(err).rstrip(".")]
    return []
