"""Give freed tensor memory back to the system at once, so that peak RSS is the memory training really holds.

glibc's malloc serves a large block from its heap once a block that size has been freed before (its mmap threshold
rises with every large free, up to 32 MiB), and heap memory freed in the middle stays with the process. A CPU
training step allocates and frees gigabytes of activations in blocks of a few MiB; the holes they leave add up to
about a third of the peak RSS. Fixing the threshold makes every block of `threshold` bytes or more a mapping of its
own, unmapped when freed: the values computed are the same, pages are zeroed again on first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["DEFAULT_THRESHOLD", "return_freed_memory"]

DEFAULT_THRESHOLD = 1 << 20  # 1 MiB: activations of even a short sequence are larger, small objects stay in the heap
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") else None


def return_freed_memory(threshold: int = DEFAULT_THRESHOLD) -> bool:
    """Serve allocations of `threshold` bytes and more with their own mappings, returned to the system when freed,
    and trim the heap's free top beyond `threshold`. True when the C library took the setting (glibc on Linux);
    elsewhere nothing changes and False is returned."""
    libc = _libc()
    if libc is None:
        return False
    took_mmap = libc.mallopt(_M_MMAP_THRESHOLD, ctypes.c_int(threshold)) == 1
    took_trim = libc.mallopt(_M_TRIM_THRESHOLD, ctypes.c_int(threshold)) == 1
    return took_mmap and took_trim
