"""Joined hosts out of rotation while NotReady: the instances of a joined host whose link to the
controller dropped, or whose heartbeats are late (``late_after``), leave the load balancers'
rotation at once, long before the host is declared dead; they come back as soon as it is heard
again (each as its status then says). Passive health alone would keep sending new connections
to an instance a host can no longer report on.

Silence counts only while the controller listened (as in fabric.controller.hosts): a watch that
woke late blames nobody. Local hosts are the controller's own children: untouched here.
"""

from __future__ import annotations

import logging

import anyio

from fabric.controller.hosts import Host
from fabric.controller.state import ControllerState

log = logging.getLogger("fabric.controller")


def late_after(state: ControllerState) -> float:
    """Silence after which a host is NotReady (two heartbeat intervals, at most half the
    failure timeout): the same rule `fabric hosts` shows."""
    s = state.settings
    return min(2 * s.host_heartbeat_interval, s.host_failure_timeout / 2)


def set_out(state: ControllerState, host: Host, out: bool, why: str = "") -> None:
    """Take a joined host's instances out of rotation (``out``), or give them back."""
    rotation = state.rotation
    if out == (host.id in rotation.hosts_out):
        return
    if out:
        rotation.hosts_out.add(host.id)
        log.warning("host %s is NotReady (%s): its instances leave rotation", host.id, why)
        state.events.record(
            "heal", f"host {host.id} is NotReady ({why}); its instances leave rotation", host=host.id
        )
    else:
        rotation.hosts_out.discard(host.id)
        log.info("host %s is Ready again: its instances are back in rotation", host.id)
        state.events.record(
            "heal", f"host {host.id} is Ready again; its instances are back in rotation", host=host.id
        )
    for dep, inst in state.instances():
        if inst.host_id == host.id:
            rotation.refresh_instance(dep, inst)
    state.notify()


def link_lost(state: ControllerState, host_id: str) -> None:
    """A joined host's link dropped: NotReady now."""
    host = state.hosts.hosts.get(host_id)
    if host is not None and host.joined and host.alive:
        set_out(state, host, True, "its link to the controller dropped")


def heard(state: ControllerState, host: Host) -> None:
    """A joined host was heard over its link: Ready (its instances back as their status says)."""
    set_out(state, host, False)


async def watch(state: ControllerState) -> None:
    """Take out every joined host whose heartbeats are late, for ever (a background task)."""
    joined: list[str] = []
    counted = -1
    while True:
        period = late_after(state) / 2
        due = anyio.current_time() + period
        await anyio.sleep_until(due)
        if anyio.current_time() - due > period or state.hosts.deaf_for(0.0):
            continue  # the controller did not listen (a stalled loop, a held mailbox): no blame
        pool = state.hosts.hosts
        if len(pool) != counted:  # which hosts are joined, found again only when the pool changed size
            counted, joined = len(pool), [h.id for h in pool.values() if h.joined]
        now = anyio.current_time()
        limit = late_after(state)
        for host_id in joined:
            host = pool.get(host_id)
            if host is not None and host.alive and now - host.last_seen > limit:
                set_out(state, host, True, f"no heartbeat for {now - host.last_seen:.1f} s")
