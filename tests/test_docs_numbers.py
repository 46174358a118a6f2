"""One number, one source: every measured number the README and the reference pages in docs/ quote stands in a
block that `bench/numbers.py render` writes from docs/numbers.json (with its date, commit, machine and
precision), and the block says what numbers.json says. docs/record.md is the dated history and is not checked."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
METRIC = re.compile(r"(?<![\d.])0\.\d{3,4}(?![\d.]| ?s\b| ?ms\b)")  # a score or a delta; not seconds, not a version


def _numbers():
    spec = importlib.util.spec_from_file_location("bench_numbers", ROOT / "bench" / "numbers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


numbers = _numbers()
REFERENCE = [p for p in numbers.PAGES if p != numbers.RECORD]


def stray_metrics(text: str) -> list[str]:
    """Metrics (0.xxx, 0.xxxx) outside the numbers blocks, with the line each stands on."""
    outside = numbers.BLOCK.sub("", text)
    return [line.strip()[:100] for line in outside.splitlines() if METRIC.search(line)]


def stale_blocks(text: str, source: dict) -> list[str]:
    """The names of the blocks whose text is not what numbers.json renders."""
    return [b[1] for b in numbers.BLOCK.finditer(text) if b[0] != numbers.rendered(b[0], source)]


@pytest.mark.parametrize("page", REFERENCE, ids=lambda p: p.name)
def test_every_block_says_what_numbers_json_says(page: Path):
    assert stale_blocks(page.read_text(), numbers.load()) == [], f"{page.name}: run `python bench/numbers.py render`"


@pytest.mark.parametrize("page", REFERENCE, ids=lambda p: p.name)
def test_no_metric_is_quoted_outside_a_block(page: Path):
    assert stray_metrics(page.read_text()) == [], (
        f"{page.name} quotes measured numbers outside a numbers block: put them in docs/record.md (dated) or a block"
    )


@pytest.mark.parametrize("page", REFERENCE, ids=lambda p: p.name)
def test_no_count_of_the_default_run_is_quoted_outside_a_block(page: Path):
    """Counts went stale where the 0.xxx check could not see them: "the built-in run's 506" pairs (497 since),
    "16 of 959 chunks ... the longest 467" (19 of 927, 640)."""
    outside = numbers.BLOCK.sub("", page.read_text())
    quoted = re.findall(r"(?:built-in|default) (?:run|corpus)'s \d[\d,]*|\b\d+ of the built-in corpus's", outside)
    assert quoted == [], f"{page.name} quotes the default run's counts outside a numbers block: {quoted}"


def test_the_readme_quotes_the_default_run_from_its_source():
    source = numbers.load()
    readme = (ROOT / "README.md").read_text()
    assert {"default_run", "default_time"} <= {b[1] for b in numbers.BLOCK.finditer(readme)}
    shipped = source["default_run"]["verdict"]
    assert f"| {shipped} | {source['default_run']['rows'][shipped]['ndcg@10']:.4f} |" in readme
    assert source["default_run"]["precision"] in readme and source["default_run"]["machine"]["cpu"] in readme


def test_the_checks_catch_what_they_are_for():
    source = numbers.load()
    readme = (ROOT / "README.md").read_text()
    shipped = source["default_run"]["verdict"]
    quoted = f"{source['default_run']['rows'][shipped]['ndcg@10']:.4f}"
    # a number edited inside a block by hand, and the source moving on without a render: both are stale
    assert stale_blocks(readme.replace(f"| {quoted} |", "| 0.9999 |", 1), source) == ["default_run"]
    moved = {**source, "default_run": {**source["default_run"], "wall_s": source["default_run"]["wall_s"] + 60}}
    assert set(stale_blocks(readme, moved)) == {"default_run", "default_time"}
    # a number copied into prose, a delta and an interval too
    assert stray_metrics(readme + f"\nThe default run scores {quoted} (+0.041 [-0.012, +0.06]).\n") == [
        f"The default run scores {quoted} (+0.041 [-0.012, +0.06])."
    ]
    assert stray_metrics("a batch of 32, 1.5x faster, version 0.14.25, lr 5e-05, steps of 0.041 s\n") == []
