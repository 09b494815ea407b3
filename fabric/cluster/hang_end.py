"""The backstop of a hang of a joined host's own processes (its agent stopped, and with
``host`` every process under it): a process of its own session that resumes them at the hang's
end, or as soon as the controller says the hang was undone. Stopped, the host cannot be reached
over its link; this process asks the controller's join port instead (HangState, with the host's
certificate) every ASK_EVERY seconds.

Run as ``python -m fabric.cluster.hang_end FOLDER SECONDS ID PID:STARTED...`` (FOLDER: the
host's state folder).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio
import anyio.to_thread

from fabric.cluster.join import JoinRefused, hang_undone
from fabric.cluster.node import Controllers, Identity
from fabric.host.processes import Proc, signal_processes, still_alive

#: seconds between two questions to the controller
ASK_EVERY = 0.5


async def until_undone(identity: Identity, hang: str, end: float, procs: list[Proc]) -> bool:
    """Ask the controller until it says the hang was undone (True) or ``end`` (monotonic) comes,
    or every process to resume is gone (killed meanwhile: nothing left to do)."""
    state = identity.state()
    if state is None or not hang:
        await anyio.sleep(max(0.0, end - time.monotonic()))
        return False
    place = Controllers(state)
    ca = identity.ca.read_bytes()
    while (left := end - time.monotonic()) > 0:
        if not await anyio.to_thread.run_sync(still_alive, [(p.pid, p.started) for p in procs]):
            return False
        with anyio.move_on_after(left):
            for host, port in place.addresses():
                try:
                    if await hang_undone(host, port + 1, ca, identity.cert, hang):
                        return True
                    break  # answered: still in force
                except (JoinRefused, OSError):
                    continue  # another replica, or nobody now
            await anyio.sleep(min(ASK_EVERY, max(0.0, end - time.monotonic())))
    return False


def main(argv: list[str]) -> None:
    """Wait (see the module), then resume the processes named, children first, each only if
    still the same process."""
    folder, seconds, hang = Path(argv[0]), float(argv[1]), argv[2]
    procs = []
    for item in argv[3:]:
        pid, _, started = item.partition(":")
        procs.append(Proc(int(pid), 0, 0, "", float(started)))
    end = time.monotonic() + max(0.0, seconds)
    try:
        anyio.run(until_undone, Identity(folder), hang, end, procs, backend="trio")
    except Exception:  # whatever went wrong, the processes are resumed at the end
        time.sleep(max(0.0, end - time.monotonic()))
    signal_processes(procs, "resume")


if __name__ == "__main__":
    main(sys.argv[1:])
