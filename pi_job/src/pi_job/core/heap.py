"""Keeping freed bulk buffers in the process: one ``mallopt`` call, made by the CLI at start.

glibc serves a large allocation (above its mmap threshold: 128 KiB at first, raised
adaptively) with an ``mmap`` of its own and gives it back to the kernel when it is freed, and
it trims the heap's free top, so every job body of a few MiB that is read, hashed or joined
faults its pages in again: about 270,000 page faults per matvec run
of 512 MiB. :func:`keep_freed_buffers` asks glibc to serve such buffers from the heap and to
keep freed heap memory, so the same pages are reused body after body (11,000 faults). It is a
process-wide setting, so the ``pi-job`` entry point makes it, not library code;
``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_TRIM_THRESHOLD_`` in the environment do the same for a
program that imports :mod:`pi_job`.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Final

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD: Final = 32 * 2**20
"""Largest allocation served from the heap (glibc's maximum on 64-bit; bodies are smaller)."""
TRIM_THRESHOLD: Final = 256 * 2**20
"""Free heap memory kept for reuse before glibc gives it back to the kernel."""


@functools.cache
def keep_freed_buffers() -> bool:
    """Once per process: glibc's heap serves and keeps buffers of bulk bodies. False where the
    C library has no ``mallopt`` (musl) or refuses the values."""
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    threshold = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    trim = mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(threshold and trim)
