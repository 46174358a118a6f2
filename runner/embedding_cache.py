"""Cache of the base model's corpus embeddings, shared by every run (and sweep job) that needs them.

Key: model identity (weights hash), corpus hash, max_seq_length, passage prompt, precision.
An entry is a directory with `embeddings.npy` and `manifest.json`, written into a temp dir and
renamed into place, manifest last: a killed job never leaves an entry that a later job trusts.
Arrays load with `allow_pickle=False`: nothing in the cache can run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from runner.evaluate import CorpusIndex

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx")


def model_identity(name_or_path: str) -> str:
    """`<dir name>@sha256:<hash of weight files>` for a local model; the hub id otherwise."""
    path = Path(name_or_path)
    if not path.is_dir():
        return name_or_path
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        h.update(str(f.relative_to(path)).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return f"{path.name}@sha256:{h.hexdigest()[:16]}"


def cache_key(model_id: str, corpus: dict[str, str], **settings) -> str:
    h = hashlib.sha256(json.dumps({"model": model_id, **settings}, sort_keys=True).encode())
    for doc_id in sorted(corpus):
        h.update(doc_id.encode() + b"\0" + corpus[doc_id].encode() + b"\0")
    return h.hexdigest()[:24]


def load(entry: Path) -> CorpusIndex | None:
    manifest = entry / "manifest.json"
    if not manifest.is_file():
        return None
    meta = json.loads(manifest.read_text())
    emb = np.load(entry / "embeddings.npy", allow_pickle=False)
    import torch

    return CorpusIndex(meta["model_id"], meta["doc_ids"], torch.from_numpy(emb))


def store(entry: Path, index: CorpusIndex) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}."))
    try:
        np.save(tmp / "embeddings.npy", index.embeddings.cpu().numpy(), allow_pickle=False)
        (tmp / "manifest.json").write_text(json.dumps(
            {"model_id": index.model_id, "doc_ids": index.doc_ids, "shape": list(index.embeddings.shape)}))
        try:
            os.rename(tmp, entry)
        except OSError:  # another job stored the same entry first: theirs is as good
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def cached_index(cache_dir: Path, key: str, build) -> tuple[CorpusIndex, bool]:
    """(index, hit): the stored entry for `key`, or `build()` stored under it."""
    entry = Path(cache_dir) / "embeddings" / key
    index = load(entry)
    if index is not None:
        return index, True
    index = build()
    store(entry, index)
    return index, False
