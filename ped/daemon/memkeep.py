"""Memory upkeep for daemons that run for months: freed heap pages go back to the system.

Why: glibc keeps what a process frees.  A chunk freed in the middle of the heap stays
resident (its pages were touched) until glibc hands it out again, and the next request
of another size may be carved from pages never touched before.  Over hundreds of
thousands of operations the set of touched pages creeps towards the heap's whole extent
while the bytes in use stay flat: the soak (`make soak --memstats`) saw pedserver's
resident ``[heap]`` rise page by page with glibc's heap size, its bytes in use and
pymalloc's arenas all unchanged.  ``malloc_trim(0)`` returns every whole free page
inside the heap (not only at its top) with ``madvise``, so that a hole freed in the
middle of the heap does not stay resident.  It cannot move a long-lived chunk that
fragmentation placed high in the heap, so the heap's extent may still creep; the soak's
``--memstats`` table shows that figure (``malloc_heap``) beside what is in use.

Every `INTERVAL` seconds a daemon calls it once (under a millisecond for a heap of a few
MB).  Where the C library has no ``malloc_trim`` (musl, macOS) upkeep does nothing.

What makes the heap's extent creep is mostly the big transient buffers: every read from
a socket or a TLS stream allocates its whole buffer (trio's 64 KiB ``recv``, the ssl
module's 16 KiB ``read``; heaptrack counted about seven per login in pedserver) and
shrinks it to what arrived.  Carved from the heap, each leaves a hole that small,
long-lived chunks land in, so the next buffer is carved higher.  `tune_heap` fixes
glibc's mmap threshold at `MMAP_THRESHOLD` (``mallopt(M_MMAP_THRESHOLD)``; glibc would
otherwise raise it as such buffers are freed, up to 32 MiB): buffers that big get a
mapping of their own and give it back whole when freed.
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

import trio

#: Seconds between two trims: often enough that a day's churn never accumulates, rare
#: enough to cost nothing measurable.
INTERVAL = 60.0

#: Allocations of at least this many bytes are mapped on their own (the TLS and socket
#: read buffers: 16 KiB + a bytes object's header and more), not carved from the heap.
MMAP_THRESHOLD = 16 * 1024
#: glibc's ``mallopt`` parameter number for it (malloc.h).
M_MMAP_THRESHOLD = -3

log = logging.getLogger("ped.daemon.memkeep")


def tune_heap(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold (see the module docstring); False where the C library
    has no ``mallopt`` or refuses the value.  Call it once, before the event loop starts."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, threshold))


def find_trim() -> Callable[[], bool] | None:
    """glibc's ``malloc_trim(0)`` as a function returning whether pages were released;
    None where the C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int

    def release() -> bool:
        return bool(trim(0))

    return release


async def keep_memory(interval: float = INTERVAL,
                      trim: Callable[[], bool] | None = None) -> None:
    """Trim the heap every *interval* seconds, for as long as the daemon runs."""
    release = trim if trim is not None else find_trim()
    if release is None:
        log.debug("no malloc_trim in this C library: memory upkeep off")
        return
    while True:
        await trio.sleep(interval)
        release()
