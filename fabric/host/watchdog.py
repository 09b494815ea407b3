"""The host agent's heartbeat watchdog for one guest (seed C): a heartbeat every
guest_heartbeat_interval (the first at once, then on the host's shared cadence), and a verdict
when no reply came for guest_heartbeat_timeout.

No process lives here: the guest is any Ref, so the 10-minute default runs at full length
under trio's autojump clock with an in-process stand-in for the guest.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Final

import anyio

from actors import ActorDead, ActorError, AskTimeout, Ref
from fabric.guest.messages import Heartbeat, HeartbeatReply
from fabric.settings import Settings

#: Missed heartbeats in a row after which the host stops vouching for the last status it heard
#: and shows RoleStateUnknown: one miss is noise, three (7.5 s by default) are a pattern.
UNKNOWN_AFTER: Final = 3

OnReply = Callable[[HeartbeatReply], Awaitable[None]]
OnSilence = Callable[[float], Awaitable[None]]


class HeartbeatWatchdog:
    """Heartbeats one guest and decides when its silence means its state is unknown, and when
    it means the guest OS must be restarted.

    Args:
        guest: the guest's Ref (the VM's first process, or a stand-in).
        settings: guest_heartbeat_interval (the cadence, and how long a reply may take) and
            guest_heartbeat_timeout (the silence that condemns the guest).
        unknown_after: missed heartbeats in a row before ``on_unknown`` is called.
    """

    def __init__(self, guest: Ref, settings: Settings, *, unknown_after: int = UNKNOWN_AFTER) -> None:
        self.guest = guest
        self.interval = settings.guest_heartbeat_interval
        self.timeout = settings.guest_heartbeat_timeout
        self.unknown_after = unknown_after
        self.seq = 0
        self.missed = 0
        self.last_reply: float | None = None

    async def run(self, on_reply: OnReply, on_unknown: OnSilence) -> float:
        """Heartbeat until no reply came for guest_heartbeat_timeout; return that silence (s).

        ``on_reply`` gets every reply that arrived in time; ``on_unknown`` is called once per
        silence, with its length so far, when ``unknown_after`` heartbeats in a row went
        unanswered. The silence is counted from the last reply (or from the start), and
        from the host agent's own return when it was stopped or starved past an interval.
        """
        start = anyio.current_time()
        self.last_reply = start
        tick = start
        while True:
            sent = anyio.current_time()
            reply = await self.beat()
            now = anyio.current_time()
            if reply is not None:
                self.last_reply = now
                self.missed = 0
                await on_reply(reply)
            elif self.stalled(now - sent - self.interval):
                # The ask ran out while this process was not running: the reply may be sitting
                # unread. Not the guest's silence: count afresh from now, and not as a miss.
                self.last_reply = now
            else:
                self.missed += 1
                silent = now - self.last_reply
                if silent >= self.timeout:
                    return silent
                if self.missed == self.unknown_after:
                    await on_unknown(silent)
            # A fixed cadence: a slow reply shortens the wait before the next heartbeat (and a
            # beat that overran skips the ticks it missed rather than catching up in a burst).
            tick = self.next_tick(tick)
            if self.stalled(anyio.current_time() - tick):
                tick = self.next_tick(anyio.current_time())
            await anyio.sleep(max(0.0, tick - anyio.current_time()))
            now = anyio.current_time()
            if self.stalled(now - tick):
                # Woken far past the tick: this process was stopped or starved, and heard no
                # one meanwhile. The guest gets a full timeout from the heartbeat sent now.
                self.last_reply = max(self.last_reply, now)

    def stalled(self, late: float) -> bool:
        """Whether this process came back ``late`` seconds after it meant to: more than one
        interval means its own loop did not run (SIGSTOP, a starved machine), and a guest must
        not be blamed for the silence the host agent could not hear."""
        return late > self.interval

    def next_tick(self, tick: float) -> float:
        """The next heartbeat's time after ``tick``: the next multiple of the interval on the
        event loop's clock, shared by every guest of the host, so that a host with a hundred
        guests wakes once per interval for all of them rather than a hundred times (each
        wakeup of an idle process costs far more than the heartbeat itself)."""
        return (math.floor(tick / self.interval + 1e-9) + 1) * self.interval

    async def beat(self) -> HeartbeatReply | None:
        """Send one heartbeat; return the reply, or None when none came within one interval."""
        self.seq += 1
        try:
            reply = await self.guest.ask(Heartbeat(self.seq), timeout=self.interval)
        except (AskTimeout, ActorError, ActorDead):
            # A late reply is simply missed; an error or a dead link is no heartbeat either.
            return None
        return reply if isinstance(reply, HeartbeatReply) else None
