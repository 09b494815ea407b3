"""Lead one startup task's process group: ``python -m fabric.guest.task_leader FD [--user U] -- CMD...``.

The bootstrapper starts this program in a new session, so the task and everything it starts
share one process group that the bootstrapper can kill whole. The leader runs the command as a
child (switching to the VM's account first when ``--user`` is given, inside the sandbox its
parent handed it, see actors.Sandbox), exits with its exit code
(128 + N when it was killed by signal N), and watches FD, the read end of the bootstrapper's
"lifeline" pipe: when the bootstrapper dies by any means, even SIGKILL, the pipe reads EOF and
the leader kills its whole group, so no task outlives the VM's bootstrapper.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from actors import Sandbox, drop_privileges

EXIT_USAGE = 2
EXIT_CANNOT_RUN = 127


def _watch_lifeline(fd: int) -> None:
    """Block until the bootstrapper's end of the lifeline closes, then kill the whole group."""
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _parse(argv: list[str]) -> tuple[int, str | None, list[str]]:
    if "--" not in argv:
        raise ValueError("missing '--' before the command")
    split = argv.index("--")
    head, command = argv[:split], argv[split + 1 :]
    if not head or not head[0].isdigit() or not command:
        raise ValueError("expected FD [--user USER] -- COMMAND...")
    user: str | None = None
    if len(head) == 3 and head[1] == "--user":
        user = head[2]
    elif len(head) != 1:
        raise ValueError(f"unexpected arguments {head[1:]}")
    return int(head[0]), user, command


def main(argv: list[str] | None = None) -> int:
    """Run the task; return the exit code this process should end with."""
    try:
        lifeline, user, command = _parse(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"task_leader: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sandbox = Sandbox.take()  # the task's, not the leader's: the leader stays outside
    pid = os.fork()
    if pid == 0:  # the task itself
        try:
            os.close(lifeline)
            if user is not None:
                drop_privileges(int(user) if user.isdigit() else user, sandbox)
            os.execvp(command[0], command)
        except BaseException as exc:
            print(f"task_leader: cannot run {command[0]!r}: {exc}", file=sys.stderr, flush=True)
        os._exit(EXIT_CANNOT_RUN)
    threading.Thread(target=_watch_lifeline, args=(lifeline,), daemon=True).start()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
