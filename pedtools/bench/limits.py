"""The limits a benchmark run lifts: file descriptors (1,000 links and 256 PEDs need more
than the usual 1,024) and pedserver's admission limits (every bench client dials from
127.0.0.1, which the per-source limits would otherwise treat as one flooding host)."""

from __future__ import annotations

import resource

#: pedserver's config for every bench run: room for 1,024 links at once from one address.
BENCH_SERVER_CONFIG: dict[str, int] = {
    "max_links": 1024,
    "max_handshakes": 1024,
    "max_handshakes_per_source": 1024,
    "max_op_wait": 60,
}


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards *wanted* (never above the hard
    limit); return the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft
