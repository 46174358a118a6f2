"""The stage cache: each stage's output under `<cache.dir>/<stage>/<key>/`, shared by all runs.

key = hash of everything that decides the stage's output:
  - the stage's resolved config slice, each credential replaced by one marker (`secrets.key_view`): a rotated
    key decides nothing;
  - the keys of its inputs (upstream stages);
  - the content of every file or folder its config names (`fingerprint.input_files`);
  - the syntax trees of the runner modules it can run, derived from its entry points' imports
    (`code_deps.closure`), and the versions of the libraries they import, transitively, and Python.
So a sweep over finetune settings loads, chunks, splits and generates once, and every other job
hits, while an edited file, module or library is always a miss.

An entry is written into a temp dir, its manifest last, then renamed into place: a killed job
never leaves an entry that a later job trusts, and of two jobs that miss the same key at once,
the second finds the first's entry in place and uses it (the content is the same by construction).
Entries are JSON (and `.npy` arrays loaded without pickle): reading the cache runs no code. The
manifest also says what made the entry (`python -m runner.cache list` shows it), and a hit
touches it, so `prune --older-than` removes what nobody used lately.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from runner.infra.code_deps import PACKAGE_DIR, closure, library_versions, roots_of
from runner.infra.fingerprint import input_files
from runner.infra.secrets import key_view, redact

log = logging.getLogger("ragtune")
MANIFEST = "manifest.json"


class StageCache:
    """Get-or-compute per stage. `status` records hit / miss per stage and `timings` the seconds each
    computed stage took (and `cache_keys`, what deriving the keys cost) for results.json and W&B."""

    def __init__(self, root: str | Path, enabled: bool = True, code_dir: Path = PACKAGE_DIR):
        self.root, self.enabled, self.code_dir = Path(root), enabled, Path(code_dir)
        self.status: dict[str, str] = {}
        self.timings: dict[str, float] = {"cache_keys": 0.0}
        self.described: dict[str, dict] = {}  # key -> what made it, for the manifest
        self.code_modules: dict[str, tuple[str, ...]] = {}  # stage -> the modules in its key

    def key(self, stage: str, config: Any, inputs: list[str] = (), code: tuple[Callable, ...] = ()) -> str:
        """The key of `stage` computed by `code` (its function and codec) from `config` and `inputs`."""
        if not self.enabled:
            return "off"
        start = time.perf_counter()
        deps = closure(roots_of(*code, config=config), self.code_dir)
        self.code_modules[stage] = deps.modules
        material = {
            "stage": stage,
            "config": key_view(config),
            "inputs": list(inputs),
            "files": input_files(config),
            "code": deps.digest,
            "libraries": library_versions(deps.externals),
        }
        key = hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:24]
        self.described[key] = {
            "config": redact(config),
            "inputs": list(inputs),
            "files": material["files"],
            "code": {"modules": list(deps.modules), "digest": deps.digest},
            "libraries": material["libraries"],
        }
        self.timings["cache_keys"] = round(self.timings["cache_keys"] + time.perf_counter() - start, 3)
        return key

    def run(
        self,
        stage: str,
        key: str,
        compute: Callable[..., Any],
        dump: Callable[[Any], Any],
        load: Callable[[Any], Any],
        needs: tuple[Callable[[], Any], ...] = (),
        keep: Callable[[], bool] = lambda: True,
    ) -> Any:
        """The stage's value: read from the entry, or `compute(*[need() for need in needs])`, stored
        (unless `keep()` says the value is incomplete, e.g. LLM chunks that failed and should be
        retried by the next run). The upstream `needs` run only on a miss, before this stage's clock."""
        entry = self.root / stage / key
        data = read_entry(entry) if self.enabled else None
        if data is not None:
            self.status[stage] = "hit"
            log.info("[%s] cache hit: %s", stage, entry)
            touch(entry)
            return load(data)
        values = [need() for need in needs]
        log.info("[%s] ...", stage)
        start = time.perf_counter()
        value = self._compute(stage, compute, values)
        self.timings[stage] = round(time.perf_counter() - start, 3)
        log.info("[%s] done in %.1fs", stage, self.timings[stage])
        if not self.enabled:
            self.status[stage] = "off"
        elif not keep():
            self.status[stage] = "miss (incomplete, not stored)"
        else:
            self.status[stage] = "miss"
            if not write_entry(entry, stage, key, dump(value), self.described.get(key)):
                # another job stored this key first (a parallel sweep): use what it stored, so every job
                # trains and scores on the same entry, even where computing it twice differs (an LLM at
                # temperature > 0)
                stored = read_entry(entry)
                if stored is not None:
                    self.status[stage] = "miss (another job stored it first: its entry is used)"
                    return load(stored)
        return value

    def run_files(self, stage: str, key: str, build: Callable[[Path], None], dest: Path) -> str:
        """A stage whose output is a folder of files (an exported model): copied from its entry's `files/`,
        or built by `build(folder)` into a folder of this job's own beside `dest`, stored as every entry is
        (temp dir, manifest last, atomic rename; another job's entry of the same key wins) and moved to
        `dest`. Returns "hit", "miss" or "off"; a hit marks the entry used, so prune keeps it."""
        entry = self.root / stage / key
        dest = Path(dest)
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if self.enabled and (entry / "files").is_dir() and read_entry(entry) is not None:
            shutil.copytree(entry / "files", dest)
            touch(entry)
            self.status[stage] = "hit"
            log.info("[%s] cache hit: %s", stage, entry)
            return "hit"
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))  # this job's alone
        built = tmp / dest.name  # `build` makes the folder itself, as it would make `dest`
        start = time.perf_counter()
        try:
            build(built)
            self.timings[stage] = round(time.perf_counter() - start, 3)
            if self.enabled:
                names = sorted(str(f.relative_to(built)) for f in built.rglob("*") if f.is_file())
                write_entry(entry, stage, key, {"files": names}, self.described.get(key), files=built)
            built.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.status[stage] = "miss" if self.enabled else "off"
        return self.status[stage]

    def _compute(self, stage: str, compute: Callable[..., Any], values: list) -> Any:
        return compute(*values)


def read_entry(entry: Path) -> Any | None:
    """The entry's data, or None when it is absent or incomplete (no manifest: never trusted).
    Arrays stored beside it come back under `data["arrays"]`."""
    if entry.name.startswith("."):  # a writer's temp dir, or one being removed: never an entry
        return None
    try:
        meta = json.loads((entry / MANIFEST).read_text())
        if meta.get("key") != entry.name:
            return None
        data = json.loads((entry / "data.json").read_text(encoding="utf-8"))
        if meta.get("arrays"):
            import numpy as np

            data["arrays"] = {name: np.load(entry / f"{name}.npy", allow_pickle=False) for name in meta["arrays"]}
    except (OSError, ValueError, EOFError):  # absent, removed by `prune` as we read, or not whole (a truncated
        return None  # or empty .npy): untrusted, so computed again and replaced
    return data


def write_entry(entry: Path, stage: str, key: str, data: Any, described: dict | None = None, files: Path | None = None) -> bool:
    """Write `data` (JSON; a dict's "arrays" {name: ndarray} go to .npy files), a copy of the folder `files`
    (as `files/`), and the manifest, last. False when another writer's complete entry was there first (it is
    kept: entries are never replaced)."""
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key}."))
    arrays = data.pop("arrays", {}) if isinstance(data, dict) else {}
    try:
        if files is not None:
            shutil.copytree(files, tmp / "files")
        (tmp / "data.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        for name, array in arrays.items():
            import numpy as np

            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        (tmp / MANIFEST).write_text(
            json.dumps(
                {"stage": stage, "key": key, "created": time.time(), "arrays": sorted(arrays), **(described or {})}, default=str
            )
        )
        try:
            os.rename(tmp, entry)
        except OSError:  # the entry exists: another job wrote the same key first
            if read_entry(entry) is not None:
                return False
            shutil.rmtree(entry, ignore_errors=True)  # a leftover without manifest: replace it
            os.rename(tmp, entry)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(data, dict) and arrays:
            data["arrays"] = arrays


def touch(entry: Path) -> None:
    """Mark the entry as used now (the manifest's modification time): prune keeps what is in use."""
    try:
        os.utime(entry / MANIFEST)
    except OSError:  # a read-only cache still serves hits
        pass
