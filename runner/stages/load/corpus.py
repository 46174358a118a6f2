"""Stage `load`: a corpus config in, llama-index Documents with stable ids out.

Every loader returns a `LoadedCorpus`: the documents, and the files it skipped with the reason
(counted in results.json), so one unreadable file never stops a run and never goes unnoticed.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from llama_index.core import Document

from runner.infra.errors import RagtuneError

log = logging.getLogger("ragtune")


@dataclass
class LoadedCorpus:
    documents: list[Document]
    skipped: dict[str, str] = field(default_factory=dict)  # file -> why it was skipped


def load_corpus(corpus_cfg) -> LoadedCorpus:
    """The stage: the loader the corpus config names (`_target_`), built and called by Hydra."""
    from hydra.utils import instantiate

    return instantiate(corpus_cfg)


def _limit(max_documents: int | None) -> None:
    if max_documents is not None and max_documents < 1:
        raise RagtuneError(
            f"corpus.max_documents={max_documents} keeps no document; set it to 1 or more, or to null for all of them."
        )


def load_python_docs(max_documents: int | None = None) -> LoadedCorpus:
    """One Document per entry of `pydoc_data.topics` (the Python language reference), id = topic name.

    Topics are sorted by name, so `max_documents=N` always keeps the same N.
    """
    from pydoc_data.topics import topics

    _limit(max_documents)
    names = sorted(topics)[:max_documents]
    return LoadedCorpus(
        [
            _document(topics[name].strip(), name, {"topic": name}, _heading(topics[name].strip()))
            for name in names
            if topics[name].strip()
        ]
    )


_UNDERLINE = re.compile(r"^[*=\-~^#]{3,}\s*$")


def _heading(text: str) -> str | None:
    """A document's title where its text has one: a markdown `# Title` first line, or a first line
    underlined reST-style (`Title` then `*****`), as the Python reference's topics are."""
    lines = text.lstrip().splitlines()
    if not lines:
        return None
    if lines[0].startswith("# "):
        return lines[0][2:].strip() or None
    if len(lines) > 1 and _UNDERLINE.match(lines[1]) and len(lines[0].split()) <= 15:
        return lines[0].strip() or None
    return None


def _document(text: str, doc_id: str, metadata: dict, title: str | None) -> Document:
    """A Document whose `title` (when it has one) rides along as metadata for qa_generator=titles,
    kept out of the metadata text that node parsers count against chunk_size and embed."""
    if title:
        metadata = {**metadata, "title": title}
    return Document(
        text=text, id_=doc_id, metadata=metadata, excluded_embed_metadata_keys=["title"], excluded_llm_metadata_keys=["title"]
    )


def _looks_binary(text: str) -> bool:
    """NUL bytes or mostly replacement/control characters: a binary file read as text."""
    if not text:
        return False
    sample = text[:4096]
    if "\x00" in sample:
        return True
    bad = sum(1 for c in sample if c == "\ufffd" or (ord(c) < 32 and c not in "\n\r\t\f"))
    return bad / len(sample) > 0.1


def load_directory(
    path: str, required_exts: list[str] | None = None, recursive: bool = True, max_documents: int | None = None
) -> LoadedCorpus:
    """Every file below `path` through llama-index's `SimpleDirectoryReader` (txt, md, pdf via pypdf,
    html, docx, ...), id = the file's path relative to `path` (`#<n>` per page when a reader splits
    a file). Files that fail to parse, are not UTF-8, or read as binary are skipped with a warning.
    """
    from llama_index.readers.file import HTMLTagReader

    # without llama-index-readers-file, PDFs would be read as raw bytes; HTML: the body's text
    extractors = {".html": HTMLTagReader(tag="body"), ".htm": HTMLTagReader(tag="body")}

    _limit(max_documents)
    root = Path(path)
    files = _files_below(root, path, required_exts, recursive)
    documents: list[Document] = []
    skipped: dict[str, str] = {}
    for f in files:
        rel = str(f.relative_to(root))
        if not _utf8(rel):  # the bytes of a name in another encoding: no id, cache entry or log line holds it
            rel = rel.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            skipped[rel] = "its name is not UTF-8; rename the file (e.g. convmv -f latin1 -t utf8)"
            log.warning("corpus: skipped %s: %s", rel, skipped[rel])
            continue
        read, reason = _read_file(f, rel, extractors)
        documents += read
        if reason:
            skipped[rel] = reason
            log.warning("corpus: skipped %s: %s", rel, skipped[rel])
    if not documents:
        raise RagtuneError(
            f"corpus.path={path}: none of its {len(files)} file(s) could be read "
            f"({'; '.join(f'{k}: {v}' for k, v in list(skipped.items())[:3])}); "
            "give text, markdown, PDF or HTML files."
        )
    return LoadedCorpus(documents[:max_documents], skipped)


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _files_below(root: Path, path: str, required_exts: list[str] | None, recursive: bool) -> list[Path]:
    """The files to read, sorted: below `root` (or in it only), not hidden, with one of
    `required_exts` when given; an error when there is none."""
    if not root.is_dir():
        raise RagtuneError(
            f"corpus.path={path} is not a directory; give the folder that holds your documents (txt, md, pdf, html, ...)."
        )
    exts = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in required_exts or []}
    pattern = root.rglob("*") if recursive else root.glob("*")
    files = sorted(
        f
        for f in pattern
        if f.is_file()
        and not any(p.startswith(".") for p in f.relative_to(root).parts)
        and (not exts or f.suffix.lower() in exts)
    )
    if not files:
        raise RagtuneError(
            f"corpus.path={path} holds no file{' with extension ' + ', '.join(sorted(exts)) if exts else ''}; "
            "point corpus.path at your documents or change corpus.required_exts."
        )
    return files


def _read_file(f: Path, rel: str, extractors: dict) -> tuple[list[Document], str | None]:
    """(the file's documents, None), or ([], why it is skipped)."""
    from llama_index.core import SimpleDirectoryReader

    try:
        parts = SimpleDirectoryReader(
            input_files=[str(f)], errors="strict", raise_on_error=True, file_extractor=extractors
        ).load_data()
    except UnicodeDecodeError:
        return [], "not UTF-8 text"
    except Exception as err:  # noqa: BLE001 - a reader's failure is the file's problem, not the run's
        return [], f"could not be parsed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
    texts = [p.text.strip() for p in parts]
    if any(_looks_binary(t) for t in texts):
        return [], "reads as binary data, not text"
    if not any(texts):
        return [], "holds no text"
    return [
        _document(text, rel if len(parts) == 1 else f"{rel}#{i:03d}", {"file": rel}, _heading(text))
        for i, text in enumerate(texts)
        if text
    ], None


def load_beir_corpus(path: str, max_documents: int | None = None) -> LoadedCorpus:
    """A BEIR folder's corpus.jsonl: one Document per line, id = `_id`, text = title, a space, text."""
    from runner.data.beir import read_corpus_titled

    _limit(max_documents)
    corpus = read_corpus_titled(Path(path), key="corpus.path")
    ids = list(corpus)[:max_documents]
    return LoadedCorpus([_document(corpus[i][1], i, {}, corpus[i][0]) for i in ids if corpus[i][1]])


def load_qa_file_corpus(path: str, max_documents: int | None = None) -> LoadedCorpus:
    """The corpus of a llama-index EmbeddingQAFinetuneDataset JSON: one Document per entry."""
    from runner.data.pairs import read_qa_dataset

    _limit(max_documents)
    ds = read_qa_dataset(path, key="corpus.path")
    ids = list(ds.corpus)[:max_documents]
    return LoadedCorpus([Document(text=ds.corpus[i], id_=i) for i in ids if ds.corpus[i].strip()])


def documents_to_json(loaded: LoadedCorpus) -> dict:
    """The documents with their excluded-metadata keys: a title must stay out of the metadata text
    that chunking counts on a cache hit as on a miss, or chunks would depend on the cache state."""
    return {
        "documents": [
            {
                "id": d.id_,
                "text": d.text,
                "metadata": d.metadata,
                "excluded_embed": d.excluded_embed_metadata_keys,
                "excluded_llm": d.excluded_llm_metadata_keys,
            }
            for d in loaded.documents
        ],
        "skipped": loaded.skipped,
    }


def documents_from_json(data: dict) -> LoadedCorpus:
    return LoadedCorpus(
        [
            Document(
                text=r["text"],
                id_=r["id"],
                metadata=r["metadata"],
                excluded_embed_metadata_keys=r["excluded_embed"],
                excluded_llm_metadata_keys=r["excluded_llm"],
            )
            for r in data["documents"]
        ],
        data["skipped"],
    )
