"""How many descriptors a pool of the balancers may hold: a share of the process's limit."""

from __future__ import annotations

import resource


def descriptor_share(divisor: int, *, floor: int, unlimited: int) -> int:
    """RLIMIT_NOFILE's soft limit divided by ``divisor``, at least ``floor`` (``unlimited``
    when there is no limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return unlimited if soft == resource.RLIM_INFINITY else max(floor, soft // divisor)
