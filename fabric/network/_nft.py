"""nftables tables of the kernel data path: one per load balancer, named by pid and port.

Only tables named ``reddog_lb_<pid>_<port>`` are ever touched: made when a balancer starts,
deleted when it stops, and swept when their process is gone (a crash or SIGKILL).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import anyio
from anyio.lowlevel import RunVar

log = logging.getLogger("fabric.network")

PREFIX = "reddog_lb_"
#: seconds an nft run may take before it is given up (it takes a few ms)
NFT_TIMEOUT = 10.0
#: seconds an endpoint stays on the user-space path after a backend refused a kernel connect
TRIP_SECONDS = 3
#: nft processes running at once, all balancers of this process together
MAX_RUNNING = 2
#: bytes of nft output read (a table's counters; one line per backend ever routed)
MAX_OUTPUT = 1 << 20
_limiter: RunVar[anyio.CapacityLimiter] = RunVar("nft_limiter")
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
    async with _limit():
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
        "  set refused { type ipv4_addr . inet_service; flags dynamic,timeout;"
        f" timeout {TRIP_SECONDS}s; }}\n"
        "  chain nat_out { type nat hook output priority -100; policy accept; }\n"
        "  chain watch_out { type filter hook output priority 0; policy accept;\n"
        # A refused connect (RST before the flow was ever established): the endpoint goes
        # to the user-space path, which retries elsewhere and marks the instance refusing.
        f"    {match} ct direction reply tcp flags rst ct status ! assured"
        " update @trip { ct original proto-dst }"
        " update @refused { ct reply ip saddr . ct reply proto-src } drop\n"
        "  }\n"
        "}\n"
    )


def _limit() -> anyio.CapacityLimiter:
    try:
        return _limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(MAX_RUNNING)
        _limiter.set(limiter)
        return limiter


def route(table: str, vip: str, port: int, backends: list[tuple[str, tuple[str, int]]]) -> str:
    """The script making new connections to vip:port go round robin over ``backends``, each
    (counter name, address), counting each one's connections in its named counter (none:
    every connection reaches the user-space listener)."""
    lines = [f"flush chain ip {table} nat_out"]
    for name, (host, bport) in backends:
        lines += [
            f"add counter ip {table} {name}",
            f"add chain ip {table} {name}",
            f"flush chain ip {table} {name}",
            f'add rule ip {table} {name} meta l4proto tcp counter name "{name}" dnat to {host}:{bport}',
        ]
    if backends:
        # A new rotation has the refusals that tripped the endpoint behind it.
        lines.append(f"flush set ip {table} trip")
        head = f"add rule ip {table} nat_out ip daddr {vip} tcp dport {port}"
        lines.append(f"{head} tcp dport @trip return")
        spread = ", ".join(f"{i} : goto {name}" for i, (name, _) in enumerate(backends))
        lines.append(f"{head} numgen inc mod {len(backends)} vmap {{ {spread} }}")
    return "\n".join(lines) + "\n"


async def refused(table: str) -> list[tuple[str, int]]:
    """The backends that refused a kernel connect in the last ``TRIP_SECONDS``."""
    out = []
    for item in await _list_json(["set", "ip", table, "refused"]):
        elems = item.get("set", {}).get("elem", []) if isinstance(item, dict) else []
        for elem in elems if isinstance(elems, list) else []:
            val = elem.get("elem", {}).get("val", {}) if isinstance(elem, dict) else {}
            pair = val.get("concat") if isinstance(val, dict) else None
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], int):
                out.append((str(pair[0]), pair[1]))
    return out


async def _list_json(what: list[str]) -> list[Any]:
    nft = nft_path()
    if nft is None:
        return []
    async with _limit():
        with anyio.fail_after(NFT_TIMEOUT):
            result = await anyio.run_process([nft, "-j", "list", *what], check=False)
    if result.returncode or len(result.stdout) > MAX_OUTPUT:
        return []
    try:
        items = json.loads(result.stdout)["nftables"]
    except (ValueError, KeyError, TypeError):
        return []
    return items if isinstance(items, list) else []


async def counters(table: str) -> dict[str, int]:
    """The packets each named counter of ``table`` counted (each a connection's first)."""
    items = await _list_json(["counters", "table", "ip", table])
    out = {}
    for item in items:
        counter = item.get("counter") if isinstance(item, dict) else None
        if isinstance(counter, dict) and isinstance(counter.get("packets"), int):
            out[str(counter.get("name"))] = counter["packets"]
    return out


async def delete(table: str) -> None:
    """Delete ``table`` if it exists."""
    await run(f"table ip {table} {{}}\ndelete table ip {table}\n")


async def sweep() -> list[str]:
    """Delete the tables of balancer processes that are gone; returns their names."""
    nft = nft_path()
    if nft is None:
        return []
    async with _limit():
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
    """Whether ``pid`` runs (a zombie, killed but not reaped yet, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
