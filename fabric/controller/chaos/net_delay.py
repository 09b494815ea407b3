"""A network delay on a joined host whose kernel has no netem, done from the controller instead.

What netem would delay (every packet the host sends) is delayed on the two paths the fabric
itself carries: the host's actor link (its fault hook delays every frame from the host: answers,
heartbeats, statuses) and the load balancers' connections to the host's instances (a latency
toxic on the replies, for the instances at the host's address). Both live in the controller's
process: its chaos agent undoes them at the fault's end, or when it stops; nothing stays on the
host. Traffic that passes neither (instances calling each other, probes) is not delayed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable

from fabric.controller.chaos import targets
from fabric.controller.hosts import Host
from fabric.controller.state import ControllerState
from fabric.network import LoadBalancer, ToxicsUnsupportedError, UnknownToxicError
from fabric.network.toxics import Latency

Undo = Callable[[], Awaitable[str]]


async def delay_without_netem(
    state: ControllerState, held: set[tuple[str, str]], host: Host, delay: float, jitter: float
) -> tuple[str, Undo]:
    """Delay what ``host`` sends by ``delay`` seconds, +- ``jitter``, on its link and through
    the load balancers; answers what was done, in words, and its undo.

    Raises:
        ControllerError: the host's link has no fault hook, or is faulted already.
    """
    faults = host.ref.faults if host.ref is not None else None
    if faults is None:
        raise targets.refuse(
            f"host {host.id} has no netem and its link no fault hook: a delay cannot be applied",
            "ConflictError",
            409,
        )
    key = ("link", f"host:{host.id}")
    if key in held:
        raise targets.refuse(
            f"host {host.id} has no netem, and its link, which would carry the delay instead, is "
            "faulted already; undo that fault first",
            "ConflictError",
            409,
        )
    # The link without jitter: its hook would reorder frames, which TCP under netem never does.
    faults.delay(delay, 0.0, "in")
    held.add(key)
    toxic = Latency(latency=delay * 1000, jitter=jitter * 1000, stream="downstream")
    added: list[tuple[LoadBalancer, str]] = []
    for lb in state.rotation.balancers():
        with contextlib.suppress(ToxicsUnsupportedError):  # UDP: no toxics there
            added.append((lb, lb.add_toxic(toxic, hosts=[host.address])))
    for lb, _ in added:
        await lb.synced()

    async def undo() -> str:
        held.discard(key)
        faults.clear("in")
        for lb, toxic_id in added:
            with contextlib.suppress(UnknownToxicError):  # closed meanwhile
                lb.remove_toxic(toxic_id)
        for lb, _ in added:
            await lb.synced()
        return f"delay on the link to {host.id} and {len(added)} load balancer(s) removed"

    span = f"{delay * 1000:g} ms" + (f" +- {jitter * 1000:g} ms" if jitter else "")
    detail = (
        f"what the host sends delayed, without netem (this kernel has none): its link to the "
        f"controller {delay * 1000:g} ms (actor link delay), the replies of its instances at "
        f"{host.address} {span} through {len(added)} load balancer(s) (latency toxic)"
    )
    return detail, undo
