"""Actors the tests run, in-process and in child processes."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import anyio
import msgspec

from actors import Actor


class Add(msgspec.Struct, frozen=True, tag=True):
    """Add to the counter."""

    amount: int


class Get(msgspec.Struct, frozen=True, tag=True):
    """Ask for the counter and the order messages came in."""


class Fail(msgspec.Struct, frozen=True, tag=True):
    """Raise inside the handler."""

    text: str


class Exit(msgspec.Struct, frozen=True, tag=True):
    """End the whole process with this exit code."""

    code: int


class Pid(msgspec.Struct, frozen=True, tag=True):
    """Ask for the pid serving the actor."""


class Block(msgspec.Struct, frozen=True, tag=True):
    """Block the event loop (a stuck handler) for this many seconds."""

    seconds: float


class Nap(msgspec.Struct, frozen=True, tag=True):
    """Wait (without blocking the event loop) for this many seconds, then answer "rested"."""

    seconds: float


class Work(msgspec.Struct, frozen=True, tag=True):
    """Record ``n`` under ``sender``, maybe nap first, maybe ask the parent; answer ``n``."""

    sender: int
    n: int
    nap: float = 0.0
    ask_parent: bool = False


class Seen(msgspec.Struct, frozen=True, tag=True):
    """Ask for the Work numbers recorded, per sender, in the order they were handled."""


class SysExit(msgspec.Struct, frozen=True, tag=True):
    """Raise SystemExit with this code from the handler, as a program ending itself would."""

    code: int


class AtExit(msgspec.Struct, frozen=True, tag=True):
    """Register an exit handler that writes ``text`` to ``path`` when the process ends."""

    path: str
    text: str


class Inspect(msgspec.Struct, frozen=True, tag=True):
    """Ask what the process looks like from inside: open files, cwd, environment, command line."""


#: Set by a test in its own process only: a child must not see it unless it was forked.
MARKER = "pristine"


class Tell(msgspec.Struct, frozen=True, tag=True):
    """Ask the child to tell its parent something."""

    text: str


class AskParent(msgspec.Struct, frozen=True, tag=True):
    """Ask the child to ask its parent something and return the answer."""

    text: str


class Print(msgspec.Struct, frozen=True, tag=True):
    """Print a line to stdout and one to stderr."""

    text: str


class Recorder(Actor):
    """Keeps every message it receives; answers Get with them."""

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.total = 0
        self.seen: list[Any] = []
        self.work: dict[int, list[int]] = {}

    async def receive(self, message: Any) -> Any:
        match message:
            case Add(amount=amount):
                self.total += amount
                self.seen.append(amount)
                return self.total
            case Get():
                return {"total": self.total, "seen": self.seen, "prefix": self.prefix}
            case Fail(text=text):
                raise ValueError(text)
            case Exit(code=code):
                os._exit(code)
            case Pid():
                return os.getpid()
            case Block(seconds=seconds):
                time.sleep(seconds)
                return None
            case Work(sender=sender, n=n, nap=nap, ask_parent=ask_parent):
                self.work.setdefault(sender, []).append(n)
                if nap:
                    await anyio.sleep(nap)
                if ask_parent:
                    assert self.parent is not None
                    assert await self.parent.ask(n, timeout=30) == n
                return n
            case Seen():
                return self.work
            case SysExit(code=code):
                raise SystemExit(code)
            case AtExit(path=path, text=text):
                import atexit
                from pathlib import Path

                atexit.register(Path(path).write_text, text)
                return None
            case Inspect():
                import logging
                import sys

                logging.getLogger("sample").warning("inspected")
                fds = []
                for fd in os.listdir("/proc/self/fd"):
                    try:
                        fds.append(os.readlink(f"/proc/self/fd/{fd}"))
                    except FileNotFoundError:
                        continue  # the listing's own descriptor
                return {
                    "fds": sorted(fds),
                    "cwd": os.getcwd(),
                    "env": os.environ.get("SAMPLE_SETTING"),
                    "cmdline": open("/proc/self/cmdline").read(),
                    "marker": MARKER,
                    "path0": sys.path[0],
                }
            case Nap(seconds=seconds):
                await anyio.sleep(seconds)
                return "rested"
            case Tell(text=text):
                assert self.parent is not None
                await self.parent.tell(text)
                return None
            case AskParent(text=text):
                assert self.parent is not None
                return await self.parent.ask(text, timeout=10)
            case Print(text=text):
                print(text, flush=True)
                import sys

                print(f"err:{text}", file=sys.stderr, flush=True)
                return None
            case _:
                self.seen.append(message)
                return message


class StubbornStop(Actor):
    """Ignores the polite stop: its on_stop blocks the whole process, and SIGTERM too."""

    async def on_start(self) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    async def receive(self, message: Any) -> Any:
        return os.getpid()

    async def on_stop(self) -> None:
        time.sleep(3600)


class FailingStart(Actor):
    """on_start raises."""

    async def on_start(self) -> None:
        raise RuntimeError("cannot start: no database")


class Slow(Actor):
    """Each message takes a while: fills its mailbox quickly."""

    def __init__(self) -> None:
        self.count = 0

    async def receive(self, message: Any) -> Any:
        if message == "count":
            return self.count
        await anyio.sleep(0.05)
        self.count += 1
        return None


class Spawner(Actor):
    """Spawns a Recorder in a child process of its own (a grandchild of the test)."""

    async def on_start(self) -> None:
        self.child = await self.spawn_process("tests.actors.sample_actors:Recorder", name="grandchild")

    async def receive(self, message: Any) -> Any:
        return await self.child.ask(message)
