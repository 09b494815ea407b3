"""Run a chaos scenario from the portal's chaos page: ``POST /portal/chaos/scenario`` with the
scenario's TOML as the body answers a stream of server-sent events: ``progress`` lines as the
run goes, then ``report`` (the report page, HTML, as a JSON string) or ``failed`` (one line).

The chaos runner lives above the portal (fabric.chaos): the embedded fabric hands it in with
``register`` (fabric.server), so a fabric without it answers 501. One run at a time (409).
"""

from __future__ import annotations

import contextlib
import json
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio

from fabric.frontend._http import Request, Response
from fabric.frontend.api import ApiError
from fabric.frontend.streams import EventStream, Message, stream_slots

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

#: runs the scenario (TOML text) against the fabric of a state folder, calling progress(line)
#: as it goes; returns the report page (HTML). Raises ValueError (a one-line message) for a
#: scenario or fabric the run cannot start with.
ScenarioRunner = Callable[[Path, str, Callable[[str], None]], Awaitable[str]]

logger = logging.getLogger("fabric.portal")

SCENARIO_MAX_BYTES: Final = 64 * 1024
#: progress lines waiting for the page; a run writes a few a second
_BACKLOG: Final = 256

_runner: list[ScenarioRunner] = []
_running: weakref.WeakKeyDictionary[Any, anyio.Lock] = weakref.WeakKeyDictionary()


def register(runner: ScenarioRunner) -> None:
    """Hand the portal the chaos runner (the embedded fabric does, on start)."""
    _runner[:] = [runner]


async def route(rdfe: Rdfe, r: Request) -> Response:
    """Answer ``POST /portal/chaos/scenario``."""
    rdfe._allow(r, "POST")
    if not _runner:
        raise ApiError(501, "NotImplemented", "this fabric runs no chaos runner: use `fabric chaos run`")
    if int(r.headers.get("content-length", "0") or 0) > SCENARIO_MAX_BYTES:
        raise ApiError(413, "RequestBodyTooLarge", f"a scenario is at most {SCENARIO_MAX_BYTES} bytes")
    r._max = min(r._max, SCENARIO_MAX_BYTES)
    text = (await r.body()).decode("utf-8", errors="replace")
    lock = _running.setdefault(rdfe, anyio.Lock())
    if lock.locked():
        raise ApiError(409, "ConflictError", "a scenario runs already: wait for its report")
    runner = _runner[0]
    return EventStream(r._receive, lambda: _run(lock, runner, rdfe.state_dir, text), stream_slots(rdfe))


async def _run(
    lock: anyio.Lock, runner: ScenarioRunner, state_dir: Path, text: str
) -> AsyncIterator[Message | None]:
    send, receive = anyio.create_memory_object_stream[str](_BACKLOG)

    def progress(line: str) -> None:
        # A page that reads slowly misses progress lines, never the report.
        with contextlib.suppress(anyio.WouldBlock):
            send.send_nowait(line)

    outcome: list[Message] = []

    async def play() -> None:
        try:
            html = await runner(state_dir, text, progress)
            outcome.append(("report", json.dumps(html), ""))
        except ValueError as exc:
            outcome.append(("failed", json.dumps(str(exc)), ""))
        except Exception as exc:  # a bug in the run: the page says so, the log has the traceback
            logger.exception("a chaos scenario run from the portal failed")
            outcome.append(
                (
                    "failed",
                    json.dumps(f"the run failed ({type(exc).__name__}: {exc}); see the fabric's log"),
                    "",
                )
            )
        finally:
            send.close()

    async with lock, anyio.create_task_group() as tg, receive:
        tg.start_soon(play)
        async for line in receive:
            yield ("progress", json.dumps(line), "")
    yield outcome[0] if outcome else ("failed", json.dumps("the run ended without a report"), "")
