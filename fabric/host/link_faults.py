"""Chaos on a host agent: drop, delay or cut the link to one of its VMs (a GuestLinkFault).

The link is the VM's process link (actors.LinkFaults on its Ref), so the fault acts on every
frame between this host agent and the VM, and nothing else changes.
"""

from __future__ import annotations

from fabric.host.guests import Guest
from fabric.host.messages import GuestLinkApplied, GuestLinkFault, GuestLinkUnavailable


def apply_guest_link(guest: Guest | None, fault: GuestLinkFault) -> GuestLinkApplied:
    """Apply a GuestLinkFault to the link of ``guest`` (None: no such guest here).

    Raises:
        GuestLinkUnavailable: no such guest here, or its VM is down (rebooting).
    """
    if guest is None or guest.vm is None or guest.vm.faults is None:
        if fault.action == "clear":
            return GuestLinkApplied(instance_id=fault.instance_id, pid=0)
        raise GuestLinkUnavailable(
            f"the VM of {fault.instance_id} does not run on this host now; try again once it is up"
        )
    faults = guest.vm.faults
    if fault.seed is not None:
        faults.reseed(fault.seed)
    match fault.action:
        case "drop":
            faults.drop(fault.probability, fault.direction)
        case "delay":
            faults.delay(fault.seconds, fault.jitter, fault.direction)
        case "cut":
            faults.cut(fault.direction)
        case "clear":
            faults.clear(fault.direction)
    return GuestLinkApplied(instance_id=fault.instance_id, pid=guest.pid)
