"""See and manage the stage cache: `python -m runner.cache` (or `ragtune cache`).

    python -m runner.cache list                       # entries per stage: size, age, last use, what made them
    python -m runner.cache list --stage generate --json
    python -m runner.cache show <key>                 # one entry's whole manifest: config, inputs, files, code
    python -m runner.cache prune --older-than 14d     # remove entries nobody used for 14 days
    python -m runner.cache clear [--stage chunk] --yes

`--dir` names the cache (default `outputs/cache`, where `cache.dir` puts it). Removing an entry
first renames it out of place, so a job reading the cache at that moment sees a miss, never half
an entry. Results, models and run directories are never touched here.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from runner.infra.stage_cache import MANIFEST

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
IN_FLIGHT = 3600  # a writer's temp folder younger than this (seconds) belongs to a running job


@dataclass
class Entry:
    stage: str
    path: Path
    bytes: int
    created: float
    used: float
    complete: bool
    manifest: dict

    @property
    def key(self) -> str:
        return self.path.name

    @property
    def in_flight(self) -> bool:
        """A writer's temp folder (`.key.xxxx`) touched within IN_FLIGHT: a job is writing it right now, and
        removing it would break that job; an older one is a killed writer's leftover."""
        return self.path.name.startswith(".") and time.time() - self.used < IN_FLIGHT


def parse_age(text: str) -> float:
    """`14d`, `12h`, `30m`, `2w`, `90s` (or a bare number of days) -> seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text)
    if not match:
        raise SystemExit(f"--older-than={text} is not an age; write it like 14d, 12h, 30m or 2w.")
    return float(match.group(1)) * UNITS[match.group(2) or "d"]


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def entries(root: Path, stage: str | None = None) -> list[Entry]:
    """Every entry under `root` (complete or a killed writer's leftover), oldest use first."""
    found = []
    for stage_dir in sorted(p for p in root.glob("*") if p.is_dir() and not p.name.startswith(".")):
        if stage and stage_dir.name != stage:
            continue
        for path in sorted(p for p in stage_dir.iterdir() if p.is_dir()):
            manifest_file = path / MANIFEST
            complete = manifest_file.is_file() and not path.name.startswith(".")
            try:
                manifest = json.loads(manifest_file.read_text()) if complete else {}
            except (OSError, json.JSONDecodeError):
                manifest, complete = {}, False
            mtime = (manifest_file if complete else path).stat().st_mtime
            found.append(
                Entry(stage_dir.name, path, _size(path), float(manifest.get("created", mtime)), mtime, complete, manifest)
            )
    return sorted(found, key=lambda e: e.used)


def remove(entry: Entry) -> None:
    """Rename the entry out of place (readers now miss it), then delete it."""
    doomed = entry.path.with_name(f".deleting.{entry.path.name}.{time.time_ns()}")
    try:
        entry.path.rename(doomed)
    except OSError:  # gone already, or another prune took it
        return
    shutil.rmtree(doomed, ignore_errors=True)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def human_age(seconds: float) -> str:
    for unit, size in (("w", UNITS["w"]), ("d", UNITS["d"]), ("h", UNITS["h"]), ("m", UNITS["m"])):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def made_by(entry: Entry, width: int = 70) -> str:
    """One line of the config that made the entry: its leaves as key=value, the target shortened."""
    if not entry.complete:
        return "(incomplete: a killed writer's leftover; prune removes it)"
    config = entry.manifest.get("config")
    if config is None:
        return "(made by an older ragtune: no config recorded)"
    flat = []

    def walk(node, prefix=""):
        if isinstance(node, dict):
            for k, v in node.items():
                if k != "_partial_":
                    walk(v, f"{prefix}{k}.")
        else:
            value = str(node).rsplit(".", 1)[-1] if prefix.endswith("_target_.") else str(node)
            flat.append(f"{prefix[:-1]}={value if len(value) <= 40 else '…' + value[-39:]}")

    walk(config)
    for path, fp in (entry.manifest.get("files") or {}).items():  # the content that made it
        flat.append(f"[{Path(path).name or path}: {fp.get('files', '?')} file(s) {str(fp.get('sha256'))[:8]}]")
    text = " ".join(flat)
    return text if len(text) <= width else text[: width - 1] + "…"


def cmd_list(root: Path, stage: str | None, as_json: bool) -> None:
    found = entries(root, stage)
    now = time.time()
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "stage": e.stage,
                        "key": e.key,
                        "bytes": e.bytes,
                        "created": e.created,
                        "last_used": e.used,
                        "complete": e.complete,
                        "config": e.manifest.get("config"),
                    }
                    for e in found
                ],
                indent=2,
            )
        )
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # piped or logged: wide enough for the config column
        console = Console(width=200)
    console.print(entries_table(root, found, now))
    by_stage: dict[str, list[Entry]] = {}
    for e in found:
        by_stage.setdefault(e.stage, []).append(e)
    total = " · ".join(f"{s} {len(v)} ({human_bytes(sum(e.bytes for e in v))})" for s, v in sorted(by_stage.items()))
    print(f"{len(found)} entries, {human_bytes(sum(e.bytes for e in found))}" + (f": {total}" if total else ""))


def entries_table(root: Path, found: list, now: float):
    """The entries as a rich Table: stage, key, size and ages keep their width at any terminal width (they
    once collapsed to `…` at 100-250 columns), and "made by" takes what is left, cut with an ellipsis."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"stage cache: {root}", title_justify="left")
    for col, justify, width in (
        ("stage", "left", max([len(e.stage) for e in found] + [5])),
        ("key", "left", 12),
        ("size", "right", 8),
        ("age", "right", 5),
        ("last used", "right", 9),
    ):
        table.add_column(col, justify=justify, no_wrap=True, min_width=width)
    table.add_column("made by", justify="left", no_wrap=True, overflow="ellipsis", ratio=1)
    for e in sorted(found, key=lambda e: (e.stage, -e.used)):
        table.add_row(
            e.stage,
            e.key[:12],
            human_bytes(e.bytes),
            human_age(now - e.created),
            human_age(now - e.used) + " ago",
            Text(made_by(e, 200)),
        )
    return table


def cmd_show(root: Path, key: str) -> None:
    matches = [e for e in entries(root) if e.key.startswith(key)]
    if len(matches) != 1:
        raise SystemExit(
            f"key {key} matches {len(matches)} entries in {root}; give more of the key (python -m runner.cache list shows them)."
        )
    print(json.dumps({"path": str(matches[0].path), "bytes": matches[0].bytes, **matches[0].manifest}, indent=2, default=str))


def cmd_prune(root: Path, older_than: str, stage: str | None, dry_run: bool) -> None:
    cutoff = time.time() - parse_age(older_than)
    doomed = [e for e in entries(root, stage) if e.used < cutoff and not e.in_flight]
    for e in doomed:
        print(
            f"{'would remove' if dry_run else 'removed'} {e.stage}/{e.key} ({human_bytes(e.bytes)}, "
            f"last used {human_age(time.time() - e.used)} ago)"
        )
        if not dry_run:
            remove(e)
    print(
        f"{len(doomed)} entries, {human_bytes(sum(e.bytes for e in doomed))} "
        f"{'would be freed' if dry_run else 'freed'}; {len(entries(root, stage))} left."
    )


def cmd_clear(root: Path, stage: str | None, yes: bool) -> None:
    found = [e for e in entries(root, stage) if not e.in_flight]
    writing = len(entries(root, stage)) - len(found)
    if writing:
        print(f"{writing} entr{'y' if writing == 1 else 'ies'} being written by a running job left alone")
    what = f"{len(found)} entries ({human_bytes(sum(e.bytes for e in found))}) of {stage or 'every stage'} in {root}"
    if not yes:
        if not sys.stdin.isatty():
            raise SystemExit(f"clear would remove {what}; add --yes to do it without a prompt.")
        if input(f"remove {what}? [y/N] ").strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return
    for e in found:
        remove(e)
    print(f"removed {what}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m runner.cache",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    ap.add_argument("--dir", default="outputs/cache", help="the cache folder (cache.dir; default outputs/cache)")
    sub = ap.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="entries per stage with size, age, last use and the config that made them")
    ls.add_argument("--stage")
    ls.add_argument("--json", action="store_true", help="machine-readable")
    show = sub.add_parser("show", help="one entry's manifest")
    show.add_argument("key")
    prune = sub.add_parser("prune", help="remove entries not used for a while (and killed writers' leftovers)")
    prune.add_argument("--older-than", required=True, help="14d, 12h, 30m, 2w")
    prune.add_argument("--stage")
    prune.add_argument("--dry-run", action="store_true")
    clear = sub.add_parser("clear", help="remove every entry (of one stage with --stage)")
    clear.add_argument("--stage")
    clear.add_argument("--yes", action="store_true", help="do not ask")
    a = ap.parse_args(argv)
    root = Path(a.dir)
    if not root.is_dir():
        print(f"{root} holds no cache yet (nothing has run with cache.dir={root}).")
        return
    if a.command == "list":
        cmd_list(root, a.stage, a.json)
    elif a.command == "show":
        cmd_show(root, a.key)
    elif a.command == "prune":
        cmd_prune(root, a.older_than, a.stage, a.dry_run)
    else:
        cmd_clear(root, a.stage, a.yes)


if __name__ == "__main__":
    main()
