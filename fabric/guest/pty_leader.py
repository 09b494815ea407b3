"""Start a remote shell on a pseudo-terminal: ``python -m fabric.guest.pty_leader [--user U] -- CMD...``.

Started in a session of its own with the terminal's slave side as stdin, stdout and stderr, it
makes that terminal the session's controlling terminal, enters the sandbox its parent handed it
and switches to the VM's account (as fabric.guest.task_leader does for a startup task), then
becomes the command. The shell is then the session leader: Ctrl-C typed on the terminal reaches
its foreground process group, a window resize its SIGWINCH, and closing the terminal's master
side hangs the session up.
"""

from __future__ import annotations

import fcntl
import os
import sys
import termios

from actors import Sandbox, drop_privileges

EXIT_USAGE = 2
EXIT_CANNOT_RUN = 127


def main(argv: list[str] | None = None) -> int:
    """Become the command; return an exit code only when that fails."""
    args = sys.argv[1:] if argv is None else argv
    user: str | None = None
    if args[:1] == ["--user"] and len(args) > 1:
        user, args = args[1], args[2:]
    if args[:1] != ["--"] or len(args) < 2:
        print("pty_leader: usage: pty_leader [--user U] -- COMMAND...", file=sys.stderr)
        return EXIT_USAGE
    command = args[1:]
    sandbox = Sandbox.take()
    try:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        if user is not None:
            drop_privileges(int(user) if user.isdigit() else user, sandbox)
        os.execvp(command[0], command)
    except BaseException as exc:
        print(f"pty_leader: cannot run {command[0]!r}: {exc}", file=sys.stderr, flush=True)
    return EXIT_CANNOT_RUN


if __name__ == "__main__":
    sys.exit(main())
