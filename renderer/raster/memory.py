"""Process-level allocator tuning for real-time CPU rendering (opt-in, call once at start-up).

Rendering a frame allocates and frees a few dozen temporary tensors of 0.1-3 MB. glibc's
malloc serves blocks above its mmap threshold with fresh memory maps and returns freed memory
to the system, so every frame pays page faults for zeroed pages again; on the 2-core
development machine that was a quarter to a third of the CPU time of a 4-view 256x256 render.
Raising the mmap and trim thresholds keeps that memory in the heap for reuse.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20) -> bool:
    """Serve allocations up to ``mmap_threshold`` bytes (glibc's maximum is 32 MiB) from the
    heap and keep up to ``trim_threshold`` freed bytes for reuse. Affects the whole process;
    returns False where the C library is not glibc (nothing changes then)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError):
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, int(mmap_threshold)) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)) == 1
