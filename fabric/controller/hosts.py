"""The hosts of a pool: spinning them up, hearing their heartbeats, and declaring them dead.

A host is a host agent process (``fabric.host.agent:HostAgent``) whose parent is the
controller; tests pass a factory that builds in-process stand-ins instead. A host that stays
silent for ``host_failure_timeout``, or whose process ends without being asked to, is dead:
its process is killed (it may be hung) and the controller moves its instances elsewhere.

Silence only counts while the controller was listening. As Kubernetes' node lifecycle
controller refuses to evict when it was the one cut off, the controller first checks that it
ran on time itself: when its event loop stalled, or one command held its mailbox (where the
heartbeats wait), every host gets a fresh grace period instead of a death sentence.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import anyio

from actors import Actor, ActorDead, ProcessOptions, Ref, Request
from fabric.controller.placement import HostSlot
from fabric.controller.store import HostRecord
from fabric.host.messages import HostConfig
from fabric.settings import Settings

log = logging.getLogger("fabric.controller")

#: Builds a host for the controller (its parent) and returns its Ref once it runs.
HostFactory = Callable[[Actor, HostConfig], Awaitable[Ref]]
#: The answer type of a request to a host.
Answer = TypeVar("Answer")


class HostUnavailable(Exception):
    """The host of an instance is dead (its instances are healed elsewhere)."""


class HostStartFailed(HostUnavailable):
    """A host could not be spun up (its process failed to start); a later use tries again."""


async def spawn_host_process(controller: Actor, config: HostConfig) -> Ref:
    """The default HostFactory: a real host agent process, child of the controller."""
    folder = Path(config.state_dir) / "hosts" / config.host_id
    folder.mkdir(parents=True, exist_ok=True)
    s = config.settings
    return await controller.spawn_process(
        "fabric.host.agent:HostAgent",
        name=f"host:{config.host_id}",
        args=(config,),
        options=ProcessOptions(
            log_path=folder / "host.out.log",
            # Its own session: a Ctrl-C meant for the fabric must not kill hosts before the
            # controller stops them in order.
            new_session=True,
            # No link pings: host heartbeats and host_failure_timeout decide when a host is
            # dead (a ping timeout would condemn a hung host sooner than the setting says).
            ping_interval=None,
            # Stopping a host stops its guests, each of which may run OnStop that long.
            stop_timeout=s.on_stop_timeout + 3 * s.process_stop_timeout,
            term_timeout=s.process_stop_timeout,
        ),
    )


@dataclass(eq=False)
class Host:
    """One host of the pool."""

    record: HostRecord
    ref: Ref | None = None
    alive: bool = True
    last_seen: float = 0.0
    pid: int = 0
    spawn_lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def id(self) -> str:
        """The host id (``<pool>-host<n>``)."""
        return self.record.id


class HostPool:
    """The live hosts of one controller.

    Args:
        owner: the controller actor (parent of every host).
        factory: builds one host.
        settings: timeouts and limits.
        state_dir: the fabric's state folder (hosts keep their logs under hosts/<id>).
        on_dead: called once for a host declared dead (after its process was killed).
        closing: whether the controller is stopping (hosts then stop on purpose, and slowly).
        busy_since: when the controller began the message it is handling (None when idle):
            while it handles one message, heartbeats wait in its mailbox unheard.
    """

    def __init__(
        self,
        owner: Actor,
        factory: HostFactory,
        settings: Settings,
        state_dir: Path,
        on_dead: Callable[[Host, str], Awaitable[None]],
        closing: Callable[[], bool] = lambda: False,
        busy_since: Callable[[], float | None] = lambda: None,
    ) -> None:
        self.owner = owner
        self.factory = factory
        self.settings = settings
        self.state_dir = state_dir
        self.on_dead = on_dead
        self.closing = closing
        self.busy_since = busy_since
        #: how often the watch looks, and how late it may wake or how long one message may hold
        #: the mailbox before the controller counts itself as not listening
        s = settings
        self.watch_period = max(0.05, min(s.host_heartbeat_interval, s.host_failure_timeout / 4))
        self.stalls = 0
        self.hosts: dict[str, Host] = {}
        self.next_number = 1

    def add(self, record: HostRecord) -> Host:
        """Register a host (planned or recovered); it is spawned on first use."""
        host = Host(record, last_seen=anyio.current_time())
        self.hosts[record.id] = host
        self.next_number = max(self.next_number, record.number + 1)
        return host

    def live(self) -> list[Host]:
        """Hosts not declared dead, by number."""
        return sorted((h for h in self.hosts.values() if h.alive), key=lambda h: h.record.number)

    def slots(self, used: dict[str, int]) -> list[HostSlot]:
        """The live hosts as placement sees them, given the cores used on each."""
        return [
            HostSlot(
                id=h.id,
                number=h.record.number,
                cores=h.record.cores,
                fault_domain=h.record.fault_domain,
                used=used.get(h.id, 0),
                cordoned=bool(h.record.cordoned_at),
            )
            for h in self.live()
        ]

    async def ref(self, host_id: str) -> Ref:
        """The running host's Ref, spinning the host up on first use.

        Raises:
            HostStartFailed: the host's process failed to start.
            HostUnavailable: the host is dead or unknown.
        """
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            raise HostUnavailable(f"host {host_id} is not available")
        async with host.spawn_lock:
            if host.ref is None:
                config = HostConfig(
                    host_id=host.id,
                    cores=host.record.cores,
                    state_dir=str(self.state_dir),
                    settings=self.settings,
                    fault_domain=host.record.fault_domain,
                )
                try:
                    host.ref = await self.factory(self.owner, config)
                except Exception as exc:
                    log.error("host %s did not start: %s", host.id, exc)
                    where = self.state_dir / "hosts" / host.id / "host.out.log"
                    raise HostStartFailed(f"host {host.id} did not start ({exc}); see {where}") from exc
                host.last_seen = anyio.current_time()
                host.pid = host.ref.pid or 0
                log.info("host %s is up (pid %s)", host.id, host.pid)
                self.owner.start_soon(self._watch_exit, host, host.ref)
            if not host.alive:
                raise HostUnavailable(f"host {host.id} died")
            return host.ref

    async def ask(self, host_id: str, message: Request[Answer], timeout: float) -> Answer:
        """Ask a host; a host that is gone raises HostUnavailable (its instances will heal).

        Raises:
            HostUnavailable: the host is dead or went away while asked.
            ActorError: the host refused the request.
            AskTimeout: no answer in ``timeout`` seconds.
        """
        ref = await self.ref(host_id)
        try:
            return await ref.ask(message, timeout=timeout)
        except ActorDead as exc:
            raise HostUnavailable(f"host {host_id} went away: {exc}") from exc

    def heard(self, host_id: str, pid: int = 0, *, stamp: bool = True) -> bool:
        """A heartbeat arrived; False when the host is unknown or already declared dead.
        ``stamp=False``: it was stamped as it entered the mailbox (FabricController), not now."""
        host = self.hosts.get(host_id)
        if host is None or not host.alive:
            return False
        if stamp:
            host.last_seen = anyio.current_time()
        if pid:
            host.pid = pid
        return True

    def silent(self) -> list[Host]:
        """Running hosts that have not been heard from for host_failure_timeout."""
        now = anyio.current_time()
        limit = self.settings.host_failure_timeout
        return [h for h in self.live() if h.ref is not None and now - h.last_seen > limit]

    async def declare_dead(self, host: Host, why: str) -> None:
        """Mark the host dead, kill its process, and hand it to ``on_dead`` (once)."""
        if not host.alive or self.closing():
            return
        host.alive = False
        log.error("host %s is dead (%s); moving its instances", host.id, why)
        ref = host.ref
        if ref is not None:
            pid = ref.pid
            ref.request_stop()
            if pid and pid != os.getpid():
                # A hung host would sit through the whole stop ladder; its guests must not keep
                # serving beside their replacements, so it goes at once (its guests die with it).
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        await self.on_dead(host, why)

    async def _watch_exit(self, host: Host, ref: Ref) -> None:
        reason = await ref.join()
        if reason is not None and host.alive and host.ref is ref:
            await self.declare_dead(host, f"its process ended: {reason}")

    def deaf_for(self, woke_late: float) -> float:
        """How long the controller could not hear its hosts just now (0: it listened): its loop
        stalled (the watch woke ``woke_late`` seconds late) or a message held its mailbox."""
        busy = self.busy_since()
        held = anyio.current_time() - busy if busy is not None else 0.0
        deaf = max(woke_late, held)
        return deaf if deaf > self.watch_period else 0.0

    def grace(self, why: str | None) -> None:
        """Give every live host a fresh host_failure_timeout from now (the controller was deaf);
        ``why`` is logged (None: the same deafness goes on)."""
        now = anyio.current_time()
        for host in self.live():
            host.last_seen = max(host.last_seen, now)
        if why is not None:
            self.stalls += 1
            log.warning("%s; no host is blamed: each gets a fresh grace period", why)

    async def watch(self) -> None:
        """Declare dead every host silent for too long, for ever (run as a background task)."""
        period = self.watch_period
        due = anyio.current_time() + period
        was_deaf = False
        while True:
            await anyio.sleep_until(due)
            late = anyio.current_time() - due
            deaf = self.deaf_for(late)
            if deaf:
                # Heartbeats may sit unread in the mailbox or the link: not the hosts' fault.
                what = "its event loop stalled" if late > period else "one message held its mailbox"
                self.grace(None if was_deaf else f"the controller did not listen for {deaf:.1f} s ({what})")
            else:
                for host in self.silent():
                    if self.deaf_for(0.0) or host not in self.silent():
                        break  # a death sentence only while the controller listens
                    await self.declare_dead(
                        host, f"no heartbeat for {anyio.current_time() - host.last_seen:.1f} s"
                    )
            was_deaf = bool(deaf)
            due = anyio.current_time() + period

    async def stop(self, host_id: str) -> None:
        """Stop a host gracefully (its guests stop first) and forget it."""
        host = self.hosts.pop(host_id, None)
        if host is not None and host.ref is not None:
            host.alive = False
            await host.ref.stop()
