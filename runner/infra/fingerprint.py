"""Content fingerprints of the files a stage reads, for its cache key.

A key must change when an input file changes, whatever its size or time stamps say, so every
file is read and hashed (SHA-256): a corpus folder by each file's relative path and content, a
local model by every file in its directory, a hub model by the snapshot in the Hugging Face
cache (its commit and its files). Nothing here trusts a modification time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# config keys whose folder is a store the stage writes into, not an input it reads
STORE_KEYS = ("cache_dir",)
_BLOCK = 1 << 20


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def _files_below(root: Path) -> list[Path]:
    """Every regular file below `root` (symbolic links followed, as the readers do), but a `.git`
    folder's internals: version-control bookkeeping is never content."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        found += [Path(folder) / f for f in files if os.path.isfile(os.path.join(folder, f))]
    return sorted(found)


def path_fingerprint(path: str | Path, ignore: frozenset[str] = frozenset()) -> dict | None:
    """{"sha256": ..., "files": n, "bytes": n} of a file or a folder's files (but those named in
    `ignore`); None if it does not exist."""
    p = Path(path).expanduser()
    if p.is_file():
        return {"sha256": file_digest(p), "files": 1, "bytes": p.stat().st_size}
    if not p.is_dir():
        return None
    h, size = hashlib.sha256(), 0
    files = [f for f in _files_below(p) if f.name not in ignore]
    for f in files:
        h.update(f.relative_to(p).as_posix().encode() + b"\0" + file_digest(f).encode() + b"\0")
        size += f.stat().st_size
    return {"sha256": h.hexdigest(), "files": len(files), "bytes": size}


def _existing_path(value: str) -> bool:
    if not value or "\n" in value or len(value) > 1024:
        return False
    try:
        return Path(value).expanduser().exists()
    except OSError:  # a name too long for the file system, say: not a path
        return False


def input_files(tree, _key: str | None = None) -> dict[str, dict]:
    """{path: fingerprint} for every string in a config tree that names an existing file or folder
    (corpus.path, a pairs file, a local model, ...): any such value may be read by the stage, so
    its content belongs in the key. Hub ids are resolved to their cached snapshot (`hub_fingerprint`)."""
    found: dict[str, dict] = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k != "_target_" and k not in STORE_KEYS:
                found.update(input_files(v, k))
    elif isinstance(tree, (list, tuple)):
        for v in tree:
            found.update(input_files(v, _key))
    elif isinstance(tree, str) and tree not in found:
        if _existing_path(tree):
            found[tree] = path_fingerprint(tree)
        elif (hub := hub_fingerprint(tree)) is not None:
            found[tree] = hub
    return found


def hub_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The Hugging Face cache's snapshot folder of `repo_id` at `revision` (default: the ref `main`
    points at), or None when the id is not in the cache. Reads the cache only: no network."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")) or " " in repo_id:
        return None
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / (revision or "main")
    commit = ref.read_text().strip() if ref.is_file() else revision
    snapshot = repo / "snapshots" / str(commit)
    return snapshot if commit and snapshot.is_dir() else None


def hub_fingerprint(repo_id: str, revision: str | None = None) -> dict | None:
    """{"hub": id, "commit": ..., "sha256": ...} for a cached hub model, else None.

    A snapshot's files are links to blobs named by their content hash (the hub's etag: SHA-256 for
    large files, the git hash for small ones), so the links' targets prove the content without
    reading gigabytes; a file that is not such a link is hashed."""
    snapshot = hub_snapshot(repo_id, revision)
    if snapshot is None:
        return None
    h, size = hashlib.sha256(), 0
    files = _files_below(snapshot)
    for f in files:
        target = Path(os.path.realpath(f))
        proof = target.name if f.is_symlink() and target.parent.name == "blobs" else file_digest(f)
        h.update(f.relative_to(snapshot).as_posix().encode() + b"\0" + proof.encode() + b"\0")
        size += f.stat().st_size
    return {"hub": repo_id, "commit": snapshot.name, "sha256": h.hexdigest(), "files": len(files), "bytes": size}


def model_fingerprint(name_or_path: str, revision: str | None = None) -> dict:
    """What a model's outputs depend on: every file of its local folder, or of its hub snapshot
    (commit and content); a hub id that is not cached yet is named with its revision only."""
    if _existing_path(name_or_path):
        return {"path": str(name_or_path), **path_fingerprint(name_or_path)}
    return hub_fingerprint(name_or_path, revision) or {"hub": name_or_path, "revision": revision}


def short_identity(name_or_path: str, fingerprint: dict) -> str:
    """`<name>@sha256:<16 hex>`: how results and indexes name a model."""
    name = Path(name_or_path).name if "path" in fingerprint else name_or_path
    digest = fingerprint.get("sha256") or fingerprint.get("revision") or "unresolved"
    return f"{name}@sha256:{digest[:16]}" if "sha256" in fingerprint else f"{name}@{digest}"
