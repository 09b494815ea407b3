"""A controller replica stand-in for the leader tests, in its own process (so a test can
SIGSTOP it): it campaigns for the lease and, once it leads, writes an operation row every
50 ms with the fence of the epoch it won, without asking the elector again (a leader that has
not noticed it lost). It prints one line per event, flushed:

    leading EPOCH | lost EPOCH WHY | wrote N EPOCH | fenced N EPOCH | unavailable N

    python -m tests.fabric.controller.leader_child URL NAME DURATION INTERVAL DEADLINE
"""

from __future__ import annotations

import sys

import anyio

from fabric.controller.leader import Elector
from fabric.controller.pg_store import Database, Fence, Fenced, PostgresStore, StoreUnavailable
from fabric.controller.store import OperationRecord


def say(line: str) -> None:
    print(line, flush=True)


async def main(url: str, name: str, duration: float, interval: float, deadline: float) -> None:
    db = Database(url, name=f"lease-{name}")
    await db.open()
    store = await PostgresStore.open(url, "local")
    elector = Elector(
        db,
        name,
        duration=duration,
        renew_interval=interval,
        renew_deadline=deadline,
        on_change=lambda epoch, why: say(f"leading {epoch}" if why is None else f"lost {epoch} {why}"),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(elector.run)
        term = await elector.wait_leading()
        fence = Fence(elector.lease, name, term.epoch)
        store.fence = lambda: fence
        n = 0
        while True:
            n += 1
            try:
                await store.put(
                    OperationRecord(request_id=f"{name}-{n}", pool="local", kind=f"epoch{term.epoch}")
                )
                say(f"wrote {n} {term.epoch}")
            except Fenced:
                say(f"fenced {n} {term.epoch}")
            except StoreUnavailable:
                say(f"unavailable {n}")
            await anyio.sleep(0.05)


if __name__ == "__main__":
    url, name, *times = sys.argv[1:]
    duration, interval, deadline = map(float, times)
    anyio.run(main, url, name, duration, interval, deadline, backend="trio")
