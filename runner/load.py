"""Stage `load`: a corpus config in, llama-index Documents with stable ids out."""

from __future__ import annotations

from llama_index.core import Document

from runner.errors import RagtuneError


def load_python_docs(max_documents: int | None = None) -> list[Document]:
    """One Document per entry of `pydoc_data.topics` (the Python language reference), id = topic name.

    Topics are sorted by name, so `max_documents=N` always keeps the same N.
    """
    from pydoc_data.topics import topics

    if max_documents is not None and max_documents < 1:
        raise RagtuneError(
            f"corpus.max_documents={max_documents} keeps no document; set it to 1 or more, "
            "or to null for all of them."
        )
    names = sorted(topics)[:max_documents]
    return [
        Document(text=topics[name].strip(), id_=name, metadata={"topic": name})
        for name in names
        if topics[name].strip()
    ]


def documents_to_json(documents: list[Document]) -> list[dict]:
    return [{"id": d.id_, "text": d.text, "metadata": d.metadata} for d in documents]


def documents_from_json(rows: list[dict]) -> list[Document]:
    return [Document(text=r["text"], id_=r["id"], metadata=r["metadata"]) for r in rows]
