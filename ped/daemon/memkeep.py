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
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable

import trio

#: Seconds between two trims: often enough that a day's churn never accumulates, rare
#: enough to cost nothing measurable.
INTERVAL = 60.0

log = logging.getLogger("ped.daemon.memkeep")


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
