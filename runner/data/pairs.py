"""Read and write llama-index `EmbeddingQAFinetuneDataset` JSON files, checked and atomically."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

from runner.infra.atomic import write_json_atomic
from runner.infra.errors import RagtuneError

# Importing llama_index.finetuning warns that it is unmaintained (the dataset class is fine) and,
# through its mistralai module, adds two stdout handlers to the root logger, which would print
# every log line twice: keep the root logger as it was.
_root = logging.getLogger()
_handlers, _level = list(_root.handlers), _root.level
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from llama_index.finetuning import EmbeddingQAFinetuneDataset
_root.handlers[:], _root.level = _handlers, _level

REQUIRED_KEYS = ("queries", "corpus", "relevant_docs")


def read_qa_dataset(path: str | Path, key: str) -> EmbeddingQAFinetuneDataset:
    """Load and check a dataset; `key` is the config key that named the file, used in messages."""
    path = Path(path)
    hint = (
        "it must be a llama-index EmbeddingQAFinetuneDataset JSON with 'queries' {id: text}, "
        "'corpus' {id: text} and 'relevant_docs' {query id: [corpus ids]}"
    )
    if not path.is_file():
        raise RagtuneError(f"{key}={path} does not exist or is not a file; {hint}.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RagtuneError(f"{key}={path} is not valid UTF-8 JSON ({err}); {hint}.") from None
    if not isinstance(data, dict):
        raise RagtuneError(f"{key}={path} holds a JSON {type(data).__name__}, not an object; {hint}.")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise RagtuneError(f"{key}={path} has no {', '.join(map(repr, missing))}; {hint}.")
    for k in REQUIRED_KEYS:
        if not isinstance(data[k], dict):
            raise RagtuneError(f"{key}={path}: '{k}' is a {type(data[k]).__name__}, not an object; {hint}.")
    for k in ("queries", "corpus"):
        bad = [i for i, text in data[k].items() if not isinstance(text, str)]
        if bad:
            raise RagtuneError(
                f"{key}={path}: '{k}' holds {len(bad)} value(s) that are not text (first: {bad[0]!r} is "
                f"{type(data[k][bad[0]]).__name__}); every {k[:-1] if k == 'queries' else 'passage'} must be a string; {hint}."
            )
    bad = [
        q for q, docs in data["relevant_docs"].items() if not isinstance(docs, list) or not all(isinstance(d, str) for d in docs)
    ]
    if bad:
        raise RagtuneError(
            f"{key}={path}: relevant_docs[{bad[0]!r}] is {json.dumps(data['relevant_docs'][bad[0]])}, not a list of "
            f"corpus ids ({len(bad)} such entr{'y' if len(bad) == 1 else 'ies'}); give each query a list such as "
            '["doc-1"] (an empty list for a query without an answer).'
        )
    dangling = sorted({d for docs in data["relevant_docs"].values() for d in docs if d not in data["corpus"]})
    if dangling:
        raise RagtuneError(
            f"{key}={path}: relevant_docs names {len(dangling)} id(s) missing from 'corpus' "
            f"(first: {dangling[:3]}); fix the file so every relevant id is a corpus key."
        )
    unknown = sorted(set(data["relevant_docs"]) - set(data["queries"]))
    if unknown:
        raise RagtuneError(
            f"{key}={path}: relevant_docs has {len(unknown)} query id(s) missing from 'queries' "
            f"(first: {unknown[:3]}); fix the file so every query id is a key of 'queries'."
        )
    answered = [q for q in data["queries"] if data["relevant_docs"].get(q)]
    if not answered:
        raise RagtuneError(
            f"{key}={path} has no query with a relevant document, so there is nothing to "
            "train or evaluate on; check the file's relevant_docs."
        )
    return EmbeddingQAFinetuneDataset(**data)


def qa_file_problems(path: str | Path, key: str) -> list[str]:
    """Read a dataset file now, so a bad one fails before hours of work rather than after: what is wrong
    with it, as config problems (none if it reads)."""
    try:
        read_qa_dataset(path, key)
    except RagtuneError as err:
        return [str(err).rstrip(".")]
    return []


def write_qa_dataset(dataset: EmbeddingQAFinetuneDataset, path: str | Path) -> Path:
    """Write atomically: a reader never sees half a file."""
    return write_json_atomic(dataset.model_dump(), path)


def dataset_to_json(dataset: EmbeddingQAFinetuneDataset) -> dict:
    return dataset.model_dump()


def dataset_from_json(data: dict) -> EmbeddingQAFinetuneDataset:
    return EmbeddingQAFinetuneDataset(**data)
