"""Freed memory kept for the next allocation, not handed back to the kernel.

A training step at a long window allocates gigabytes of activations and frees them at its end. glibc's
malloc serves every block over 32 MB with its own mmap and unmaps it on free, and trims the heap's top, so
the next step asks the kernel again and the kernel zeroes every page before handing it over. On the
project's 2-core VM that zeroing was 86% of a 512-token bf16 step's CPU samples (perf: `clear_page_erms`),
and a step with a mined negative took 21.1 s; with the freed memory kept, 7.6 s (docs/record.md,
"Freed memory kept"). A VM that zeroes pages cheaply gains little (5% on another day's VM), and nothing
slows. Intel's PyTorch CPU guide gets the same from jemalloc or tcmalloc through LD_PRELOAD; glibc's own
`mallopt` does it from inside the process, with nothing to install.

Computed values do not change (where a block comes from is not what it holds); the process keeps its peak
memory until it exits, as a training step needs that peak again anyway.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("ragtune")

M_TRIM_THRESHOLD = -1  # glibc malloc.h: keep this much free memory at the heap's top
M_MMAP_MAX = -4  # glibc malloc.h: how many blocks may be served by mmap at once (0: none, all from the heap)
NEVER = -1  # as glibc reads it for M_TRIM_THRESHOLD, (size_t)-1: no free top is ever large enough to trim


def keep_freed_memory() -> str:
    """Make glibc's malloc reuse freed memory: no block served by mmap, the heap's top never trimmed.
    Returns what was done, for results.json (`machine_share.freed_memory`): "kept" or why not."""
    libc = glibc()
    if libc is None:
        return "left to the allocator (not glibc)"
    if libc.mallopt(M_MMAP_MAX, 0) != 1 or libc.mallopt(M_TRIM_THRESHOLD, NEVER) != 1:
        return "left to the allocator (mallopt refused)"
    return "kept"


def glibc():
    """The process's C library when it is glibc (it has `gnu_get_libc_version` and `mallopt`), else None."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - only glibc has it (musl, macOS do not)
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None
