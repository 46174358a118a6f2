"""The `corpus` group's schemas (one per option in conf/corpus/), and the checks of its knobs.

Kept cheap to import: `python -m runner --cfg job` reads these through `runner.config`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

from omegaconf import MISSING


@dataclass
class PythonDocsCorpus:
    _target_: str = "runner.stages.load.corpus.load_python_docs"
    max_documents: Optional[int] = None  # keep only the first N topics (by name): debug runs


@dataclass
class DirectoryCorpus:
    _target_: str = "runner.stages.load.corpus.load_directory"
    path: str = MISSING
    required_exts: Optional[List[str]] = None  # e.g. [.md, .pdf]; null: every file
    recursive: bool = True
    max_documents: Optional[int] = None


@dataclass
class BeirCorpus:
    _target_: str = "runner.stages.load.corpus.load_beir_corpus"
    path: str = MISSING  # a BEIR folder: its corpus.jsonl
    max_documents: Optional[int] = None


@dataclass
class QaFileCorpus:
    _target_: str = "runner.stages.load.corpus.load_qa_file_corpus"
    path: str = MISSING  # an EmbeddingQAFinetuneDataset JSON: its corpus
    max_documents: Optional[int] = None


CORPUS = {"python_docs": PythonDocsCorpus, "directory": DirectoryCorpus, "beir": BeirCorpus, "qa_file": QaFileCorpus}


def problems(cfg) -> list[str]:
    """What the `corpus` group's types cannot say: the documents must exist."""
    corpus_path = cfg.corpus.get("path")
    if corpus_path is not None and not Path(corpus_path).exists():
        return [f"corpus.path={corpus_path} does not exist; point it at your documents"]
    return []
