"""The stage cache: each stage's output under `<cache.dir>/<stage>/<key>/`, shared by all runs.

key = hash(stage name, the stage's resolved config slice, its inputs' keys, a code version), so a
sweep over finetune settings loads, chunks, splits and generates once, and every other job hits.
An entry is written into a temp dir, its manifest last, then renamed into place: a killed job
never leaves an entry that a later job trusts, and of two jobs that miss the same key at once,
the second finds the first's entry in place and uses it (the content is the same by construction).
Entries are JSON: reading the cache runs no code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from runner import __version__

log = logging.getLogger("ragtune")

RUNNER_DIR = Path(__file__).resolve().parent
# the modules whose code decides each stage's output: editing one invalidates that stage's entries
STAGE_CODE = {
    "load": ["load.py"],
    "chunk": ["chunk.py"],
    "split": ["split.py"],
    "generate": ["generate.py", "qa_file.py"],
    "eval_set": ["generate.py", "qa_file.py", "pipeline.py"],
    "evaluate_base": ["evaluate.py", "metrics.py", "evaluate_llama_index.py", "models.py"],
}


def code_version(stage: str) -> str:
    h = hashlib.sha256(__version__.encode())
    for name in STAGE_CODE.get(stage, []):
        h.update((RUNNER_DIR / name).read_bytes())
    return h.hexdigest()[:16]


class StageCache:
    """Get-or-compute per stage; `status` records hit / miss per stage for results.json and W&B."""

    def __init__(self, root: str | Path, enabled: bool = True):
        self.root, self.enabled = Path(root), enabled
        self.status: dict[str, str] = {}

    def key(self, stage: str, config: Any, inputs: list[str]) -> str:
        blob = json.dumps({"stage": stage, "config": config, "inputs": inputs, "code": code_version(stage)},
                          sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def run(self, stage: str, key: str, compute: Callable[[], Any], dump: Callable[[Any], Any],
            load: Callable[[Any], Any], keep: Callable[[], bool] = lambda: True) -> Any:
        """The stage's value: read from the entry, or computed and stored (unless `keep()` says the
        value is incomplete, e.g. LLM chunks that failed and should be retried by the next run)."""
        if not self.enabled:
            self.status[stage] = "off"
            return compute()
        entry = self.root / stage / key
        data = read_entry(entry)
        if data is not None:
            self.status[stage] = "hit"
            log.info("[%s] cache hit: %s", stage, entry)
            return load(data)
        value = compute()
        self.status[stage] = "miss"
        if not keep():
            self.status[stage] = "miss (incomplete, not stored)"
            return value
        write_entry(entry, stage, key, dump(value))
        return value


def read_entry(entry: Path) -> Any | None:
    """The entry's data, or None when it is absent or incomplete (no manifest: never trusted)."""
    manifest = entry / "manifest.json"
    if not manifest.is_file():
        return None
    meta = json.loads(manifest.read_text())
    if meta.get("key") != entry.name:
        return None
    return json.loads((entry / "data.json").read_text(encoding="utf-8"))


def write_entry(entry: Path, stage: str, key: str, data: Any) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{key}."))
    try:
        (tmp / "data.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
        (tmp / "manifest.json").write_text(json.dumps({"stage": stage, "key": key,
                                                       "code": code_version(stage)}))
        try:
            os.rename(tmp, entry)
        except OSError:  # the entry exists: another job wrote the same key first
            if read_entry(entry) is None:  # a leftover without manifest: replace it
                shutil.rmtree(entry, ignore_errors=True)
                os.rename(tmp, entry)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
