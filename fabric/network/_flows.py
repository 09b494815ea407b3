"""Kernel-path connections as conntrack sees them: count them, reset them (ss -K)."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio

CONNTRACK = Path("/proc/net/nf_conntrack")
#: conntrack TCP states of a connection that has ended (the rest are open)
_ENDED = {"TIME_WAIT", "CLOSE"}
#: flows reset by one ss run (its filter grows with each)
SS_BATCH = 64
SS_TIMEOUT = 10.0

Addr = tuple[str, int]


def parse(text: str, vip: str, port: int) -> list[tuple[Addr, Addr]]:
    """The open flows to vip:port that were DNATed: (client, backend) of each."""
    flows = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[2] != "tcp" or fields[5] in _ENDED:
            continue
        values: dict[str, list[str]] = {}
        for field in fields[6:]:
            key, sep, value = field.partition("=")
            if sep:
                values.setdefault(key, []).append(value)
        src, dst, sport, dport = (values.get(k, []) for k in ("src", "dst", "sport", "dport"))
        if min(len(src), len(dst), len(sport), len(dport)) < 2:
            continue
        if dst[0] != vip or dport[0] != str(port):
            continue
        backend = (src[1], int(sport[1]))
        if backend == (vip, port):  # not DNATed: a user-space connection
            continue
        flows.append(((src[0], int(sport[0])), backend))
    return flows


async def open_flows(vip: str, port: int) -> list[tuple[Addr, Addr]]:
    """The kernel path's open (client, backend) flows of the endpoint on vip:port."""

    def read() -> list[tuple[Addr, Addr]]:
        # Read and parsed in a worker thread: the table is the whole machine's.
        try:
            return parse(CONNTRACK.read_text(), vip, port)
        except OSError:
            return []

    return await anyio.to_thread.run_sync(read)


async def reset(flows: list[tuple[Addr, Addr]]) -> None:
    """Reset each flow by destroying its backend-side socket (the client gets an RST)."""
    ss = shutil.which("ss")
    if ss is None:
        return
    for start in range(0, len(flows), SS_BATCH):
        terms = [
            f"( src {b[0]} sport = :{b[1]} dst {c[0]} dport = :{c[1]} )"
            for c, b in flows[start : start + SS_BATCH]
        ]
        with anyio.move_on_after(SS_TIMEOUT):
            await anyio.run_process([ss, "-K", "-tn", " or ".join(terms)], check=False)
