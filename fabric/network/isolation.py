"""Network isolation between VMs of this machine, enforced in the kernel (root and nft only).

Every instance endpoint listens on this machine, where any process could connect to it
directly, skipping the load balancer. The fabric's nftables table ``inet reddog_fw_<pid>``
(one per fabric process; its local host agents fill it) lets a connection to an instance's
endpoint port (as its Firewall.json lists them) be opened only by root (the fabric, its load
balancers and agents) and by the accounts of the same deployment's VMs, as Azure lets a
deployment's instances reach each other's endpoints; anyone else gets a reset (TCP) or an
ICMP port unreachable (UDP). It only looks at a connection's first packet sent by a process
of this machine to one of its own addresses, before the load balancer's DNAT: a client of a
public endpoint (a role of another deployment included) goes through.

The table holds a map keyed by (protocol, port) whose verdict jumps to the chain of the port's
deployment, which accepts the uids in that deployment's set: a VM starting or stopping adds or
deletes its own elements, nothing is rebuilt. A deployment's chain and set stay (empty) until
the table goes: a VM without endpoints may still hold a uid of it. The table is deleted when
its fabric stops; one left by a fabric that died is deleted by the next fabric to start.
"""

from __future__ import annotations

import hashlib
import os
import re

import anyio

from fabric.network import _nft

PREFIX = "reddog_fw_"
_STALE = re.compile(rf"^table inet ({PREFIX}(\d+))$", re.M)


class IsolationError(OSError):
    """nft refused a change of the isolation table (the message is nft's first error line)."""


def unavailable() -> str | None:
    """Why VMs cannot be isolated here (not root, or no nft), or None when they can."""
    if os.geteuid() != 0:
        return "the fabric does not run as root (its VMs run as its own user)"
    if _nft.nft_path() is None:
        return "nft is not installed (Debian package nftables)"
    return None


def table_name(pid: int | None = None) -> str:
    """The isolation table of the fabric process ``pid`` (this one by default)."""
    return f"{PREFIX}{os.getpid() if pid is None else pid}"


async def open_table() -> str:
    """Delete the tables of fabrics that are gone, make this process's own (empty) table, and
    return its name.

    Raises:
        OSError: nft failed (its first error line).
    """
    await sweep()
    name = table_name()
    # Its own table may be there already (a pid reused after a crash): replaced whole.
    await _nft.run(
        f"table inet {name} {{}}\ndelete table inet {name}\n"
        f"table inet {name} {{\n"
        "  map ports { type inet_proto . inet_service : verdict; }\n"
        # Before the DNAT of the load balancers (-100): the port the client asked for.
        "  chain out { type filter hook output priority -150; policy accept;\n"
        "    ct state new meta skuid != 0 fib daddr type local meta l4proto . th dport vmap @ports\n"
        "  }\n"
        "}\n"
    )
    return name


async def close_table(name: str) -> None:
    """Delete ``name`` if it exists."""
    await _nft.run(f"table inet {name} {{}}\ndelete table inet {name}\n")


async def sweep() -> list[str]:
    """Delete the isolation tables of fabric processes that are gone; returns their names."""
    if _nft.nft_path() is None:
        return []
    with anyio.fail_after(_nft.NFT_TIMEOUT):
        result = await anyio.run_process([_nft.nft_path() or "nft", "list", "tables"], check=False)
    swept = []
    for name, pid in _STALE.findall(result.stdout.decode(errors="replace")):
        if not _nft._alive(int(pid)):
            try:
                await close_table(name)
            except OSError as exc:
                _nft.log.warning("cannot delete the stale isolation table %s: %s", name, exc)
                continue
            swept.append(name)
    if swept:
        _nft.log.info("deleted the isolation tables of fabrics that are gone: %s", ", ".join(swept))
    return swept


def protocol_of(endpoint_protocol: str) -> str:
    """The transport of an endpoint protocol (http, https and tcp are tcp)."""
    return "udp" if endpoint_protocol.lower() == "udp" else "tcp"


class VmFirewall:
    """The elements one host agent's VMs hold in the isolation table ``table``.

    Each VM is allowed with its deployment, account (uid) and endpoint ports; it is forgotten
    when it leaves the host. Only this host's own elements are ever deleted.
    """

    def __init__(self, table: str) -> None:
        self.table = table
        #: instance id -> (deployment chain, uid, ((protocol, port), ...))
        self.held: dict[str, tuple[str, int, tuple[tuple[str, int], ...]]] = {}
        self._lock = anyio.Lock()

    async def allow(
        self, instance_id: str, deployment_id: str, uid: int, ports: list[tuple[str, int]]
    ) -> None:
        """The instance's ports (protocol, port) open to root and its deployment's accounts, its
        account one of them (what it held before, other ports, goes first).

        Raises:
            IsolationError: nft refused it.
        """
        chain = "d_" + hashlib.sha256(deployment_id.encode()).hexdigest()[:16]
        entry = (chain, uid, tuple(sorted(set(ports))))
        async with self._lock:
            if self.held.get(instance_id) == entry:
                return
            await self._forget(instance_id)
            t = f"inet {self.table}"
            script = [
                f"add set {t} u{chain} {{ type uid; }}",
                f"add chain {t} {chain}",
                f"flush chain {t} {chain}",
                f"add rule {t} {chain} meta skuid @u{chain} accept",
                f"add rule {t} {chain} meta l4proto tcp reject with tcp reset",
                f"add rule {t} {chain} reject",
                f"add element {t} u{chain} {{ {uid} }}",
            ]
            if entry[2]:
                keys = ", ".join(f"{proto} . {port} : goto {chain}" for proto, port in entry[2])
                script.append(f"add element {t} ports {{ {keys} }}")
            # A VM whose host died without forgetting it left its uid in its deployment's set:
            # the uid may be another deployment's now.
            for other in await self._sets_holding(uid):
                if other != f"u{chain}":
                    script.append(f"delete element {t} {other} {{ {uid} }}")
            try:
                await _nft.run("\n".join(script) + "\n")
            except OSError:
                # A port another VM held (one that left without being forgotten): freed, then again.
                for proto, port in entry[2]:
                    await self._try(f"delete element {t} ports {{ {proto} . {port} }}\n")
                try:
                    await _nft.run("\n".join(script) + "\n")
                except OSError as exc:
                    raise IsolationError(f"cannot isolate {instance_id}: {exc}") from None
            self.held[instance_id] = entry

    async def forget(self, instance_id: str) -> None:
        """Delete the instance's elements (it left the host); nothing when it holds none."""
        async with self._lock:
            await self._forget(instance_id)

    async def _forget(self, instance_id: str) -> None:
        entry = self.held.pop(instance_id, None)
        if entry is None:
            return
        chain, uid, ports = entry
        t = f"inet {self.table}"
        # Only the ports still ours: another VM may hold one now (a delete ignores the verdict).
        ours = await self._ports_of(chain)
        lines = [f"delete element {t} ports {{ {p} . {n} }}\n" for p, n in ports if (p, n) in ours]
        lines.append(f"delete element {t} u{chain} {{ {uid} }}\n")
        try:
            await _nft.run("".join(lines))
        except OSError:
            # One of them is gone already (another VM took its port): the others one by one.
            for line in lines:
                await self._try(line)

    async def _sets_holding(self, uid: int) -> list[str]:
        """The deployment sets of the table that hold ``uid``."""
        found = []
        for item in await _nft._list_json(["sets", "table", "inet", self.table]):
            found_set = item.get("set") if isinstance(item, dict) else None
            if isinstance(found_set, dict) and uid in (found_set.get("elem") or []):
                found.append(str(found_set.get("name")))
        return found

    async def _ports_of(self, chain: str) -> set[tuple[str, int]]:
        """The (protocol, port) keys of the map whose verdict is ``chain``."""
        found = set()
        for item in await _nft._list_json(["map", "inet", self.table, "ports"]):
            elems = item.get("map", {}).get("elem", []) if isinstance(item, dict) else []
            for elem in elems if isinstance(elems, list) else []:
                try:
                    (proto, port), verdict = elem[0]["concat"], elem[1]["goto"]["target"]
                except (LookupError, TypeError, ValueError):
                    continue
                if verdict == chain:
                    found.add((str(proto), int(port)))
        return found

    async def _try(self, script: str) -> None:
        try:
            await _nft.run(script)
        except OSError as exc:
            _nft.log.info("isolation table %s: %s", self.table, exc)
