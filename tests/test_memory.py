"""Freed memory kept for reuse (runner.infra.memory): a block freed and asked for again comes back
without the kernel faulting its pages in a second time. Each case runs in its own process: the
setting is process-wide and cannot be undone."""

import subprocess
import sys

import pytest

from runner.infra.memory import glibc

# malloc 256 MiB, touch every page, free it, then the same again: the minor page faults of the second round
SECOND_ROUND_FAULTS = """
import ctypes, resource, sys
from runner.infra.memory import keep_freed_memory
said = keep_freed_memory() if sys.argv[1] == "keep" else "default"
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
size = 256 << 20
def touch():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.free(block)
touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
touch()
print(said, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def second_round(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", SECOND_ROUND_FAULTS, mode], capture_output=True, text=True, check=True)
    said, faults = out.stdout.split()
    return said, int(faults)


@pytest.mark.skipif(glibc() is None, reason="mallopt is glibc's")
def test_freed_memory_is_reused_without_faulting_its_pages_in_again():
    pages = (256 << 20) // 4096
    said, default = second_round("default")
    assert default > pages // 2  # glibc's default: the block was unmapped, every page faults again
    said, kept = second_round("keep")
    assert said == "kept"
    assert kept < pages // 100  # the heap kept it: (almost) no page is faulted in again


def test_not_glibc_leaves_the_allocator_alone(monkeypatch):
    from runner.infra import memory

    monkeypatch.setattr(memory, "glibc", lambda: None)
    assert memory.keep_freed_memory() == "left to the allocator (not glibc)"
