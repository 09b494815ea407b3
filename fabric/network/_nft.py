"""nftables tables of the kernel data path: one per load balancer, named by pid and port.

Only tables named ``reddog_lb_<pid>_<port>`` are ever touched: made when a balancer starts,
deleted when it stops, and swept when their process is gone (a crash or SIGKILL).
"""

from __future__ import annotations

import logging
import os
import re
import shutil

import anyio

log = logging.getLogger("fabric.network")

PREFIX = "reddog_lb_"
#: seconds an nft run may take before it is given up (it takes a few ms)
NFT_TIMEOUT = 10.0
#: seconds an endpoint stays on the user-space path after a backend refused a kernel connect
TRIP_SECONDS = 3
_STALE = re.compile(rf"^table ip ({PREFIX}(\d+)_\d+)$", re.M)


def nft_path() -> str | None:
    """The nft binary, or None when it is not installed."""
    return shutil.which("nft")


def table_name(port: int) -> str:
    """This process's table for the balancer on ``port``."""
    return f"{PREFIX}{os.getpid()}_{port}"


async def run(script: str) -> None:
    """Apply ``script`` as one nft transaction; raises OSError with nft's first error line."""
    nft = nft_path()
    if nft is None:
        raise OSError("nft is not installed (Debian package nftables)")
    with anyio.fail_after(NFT_TIMEOUT):
        result = await anyio.run_process([nft, "-f", "-"], input=script.encode(), check=False)
    if result.returncode:
        lines = result.stderr.decode(errors="replace").strip().splitlines()
        raise OSError(f"nft failed: {lines[0] if lines else result.returncode}")


def create(table: str, vip: str, port: int) -> str:
    """The script making ``table``: an empty DNAT chain, the trip and refusal detector."""
    match = f"meta l4proto tcp ct status dnat ct original ip daddr {vip} ct original proto-dst {port}"
    return (
        f"table ip {table} {{\n"
        f"  set trip {{ type inet_service; flags dynamic,timeout; timeout {TRIP_SECONDS}s; }}\n"
        "  chain nat_out { type nat hook output priority -100; policy accept; }\n"
        "  chain watch_out { type filter hook output priority 0; policy accept;\n"
        # A refused connect (RST before the flow was ever established): the endpoint goes
        # to the user-space path, which retries elsewhere and marks the instance refusing.
        f"    {match} ct direction reply tcp flags rst ct status ! assured"
        " update @trip { ct original proto-dst } drop\n"
        "  }\n"
        "}\n"
    )


def route(table: str, vip: str, port: int, backends: list[tuple[str, int]]) -> str:
    """The script making new connections to vip:port go round robin over ``backends``
    (none: every connection reaches the user-space listener)."""
    lines = [f"flush chain ip {table} nat_out"]
    if backends:
        head = f"add rule ip {table} nat_out ip daddr {vip} tcp dport {port}"
        lines.append(f"{head} tcp dport @trip return")
        spread = ", ".join(f"{i} : {host} . {bport}" for i, (host, bport) in enumerate(backends))
        lines.append(f"{head} dnat to numgen inc mod {len(backends)} map {{ {spread} }}")
    return "\n".join(lines) + "\n"


async def delete(table: str) -> None:
    """Delete ``table`` if it exists."""
    await run(f"table ip {table} {{}}\ndelete table ip {table}\n")


async def sweep() -> list[str]:
    """Delete the tables of balancer processes that are gone; returns their names."""
    nft = nft_path()
    if nft is None:
        return []
    with anyio.fail_after(NFT_TIMEOUT):
        result = await anyio.run_process([nft, "list", "tables"], check=False)
    swept = []
    for name, pid in _STALE.findall(result.stdout.decode(errors="replace")):
        if not _alive(int(pid)):
            try:
                await delete(name)
            except OSError as exc:
                log.warning("cannot delete stale nft table %s: %s", name, exc)
                continue
            swept.append(name)
    if swept:
        log.info("swept nft tables of stopped load balancers: %s", ", ".join(swept))
    return swept


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
