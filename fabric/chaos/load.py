"""HTTP load through a load balancer during a chaos run: a bounded request loop on loopback.

Each request is a fresh connection (``Connection: close``), so every request is balanced anew,
as a browser's first request is; a request succeeds when it gets an HTTP status below 400.
``rate`` caps requests per second over all ``concurrency`` workers, and ``max_requests`` caps the
total, so the load can never run away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import anyio
import msgspec

LOOPBACK: Final = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_RATE: Final = 1000.0
MAX_CONCURRENCY: Final = 64
MAX_RESPONSE: Final = 1024 * 1024


class NotLoopback(ValueError):
    """The load would leave this machine: chaos load only goes to 127.0.0.1."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One request: when it started (the runner's clock), how long it took, how it ended."""

    t: float
    latency: float
    ok: bool
    error: str = ""


class LoadStats(msgspec.Struct, frozen=True, kw_only=True):
    """Requests in a window: counts, availability and latency percentiles (of successes, in s)."""

    sent: int
    succeeded: int
    failed: int
    availability: float | None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    max: float | None = None
    errors: dict[str, int] = {}


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def stats(samples: list[Sample]) -> LoadStats:
    """LoadStats of some samples."""
    ok = [s.latency for s in samples if s.ok]
    errors: dict[str, int] = {}
    for s in samples:
        if not s.ok:
            errors[s.error] = errors.get(s.error, 0) + 1
    return LoadStats(
        sent=len(samples),
        succeeded=len(ok),
        failed=len(samples) - len(ok),
        availability=len(ok) / len(samples) if samples else None,
        p50=percentile(ok, 50),
        p90=percentile(ok, 90),
        p99=percentile(ok, 99),
        max=max(ok) if ok else None,
        errors=dict(sorted(errors.items())),
    )


@dataclass
class HttpLoad:
    """Requests ``GET path`` on ``host:port`` at up to ``rate`` per second until cancelled.

    Raises:
        NotLoopback: ``host`` is not a loopback address.
    """

    host: str
    port: int
    path: str = "/"
    rate: float = 20.0
    concurrency: int = 4
    timeout: float = 5.0
    max_requests: int = 100_000
    samples: list[Sample] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.host not in LOOPBACK:
            raise NotLoopback(f"chaos load goes to 127.0.0.1 only, not {self.host!r}")
        self.rate = min(max(self.rate, 0.1), MAX_RATE)
        self.concurrency = min(max(self.concurrency, 1), MAX_CONCURRENCY)
        self._next = 0.0
        self._stopping = False
        self.finished = anyio.Event()
        #: start times of the requests under way, by a serial number
        self._pending: dict[int, float] = {}
        self._serial = 0
        self._ended = anyio.Event()
        self._request = (
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "User-Agent: reddog-chaos\r\nConnection: close\r\n\r\n"
        ).encode()

    def window(self, start: float, end: float) -> list[Sample]:
        """The samples of requests started in [start, end)."""
        return [s for s in self.samples if start <= s.t < end]

    async def run(self) -> None:
        """Send requests until stopped or cancelled (or ``max_requests`` were sent)."""
        self._next = anyio.current_time()
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.concurrency):
                    tg.start_soon(self._worker)
        finally:
            self.finished.set()

    async def settled(self, before: float) -> None:
        """Wait until every request started before ``before`` has ended (each ends within ``timeout``)."""
        with anyio.move_on_after(self.timeout + 1.0):
            while any(t < before for t in self._pending.values()):
                await self._ended.wait()

    async def warm_up(self, deadline: float) -> bool:
        """Send requests until one succeeds (a web role may start its worker on the first);
        False when none did within ``deadline`` seconds."""
        with anyio.move_on_after(deadline):
            while True:
                if (await self.once()).ok:
                    return True
                await anyio.sleep(0.1)  # not ready yet: try again shortly
        return False

    async def stop(self) -> None:
        """Start no more requests; wait for those under way (each ends within ``timeout``)."""
        self._stopping = True
        await self.finished.wait()

    async def _worker(self) -> None:
        interval = 1.0 / self.rate
        while len(self.samples) < self.max_requests and not self._stopping:
            now = anyio.current_time()
            # A shared schedule: a slow response delays this worker, never bursts the others.
            when, self._next = self._next, max(self._next, now) + interval
            if when > now:
                await anyio.sleep(when - now)
            if self._stopping:
                return
            self.samples.append(await self.once())

    async def once(self) -> Sample:
        """One request."""
        start = anyio.current_time()
        self._serial += 1
        serial = self._serial
        self._pending[serial] = start
        try:
            return await self._request_once(start)
        finally:
            del self._pending[serial]
            self._ended.set()
            self._ended = anyio.Event()

    async def _request_once(self, start: float) -> Sample:
        error = ""
        status = 0
        try:
            with anyio.fail_after(self.timeout):
                async with await anyio.connect_tcp(self.host, self.port) as stream:
                    await stream.send(self._request)
                    data = b""
                    while b"\r\n" not in data and len(data) < MAX_RESPONSE:
                        data += await stream.receive()
                    status = _status(data)
                    # Read the rest: the request only succeeded once the whole answer came.
                    while len(data) < MAX_RESPONSE:
                        data += await stream.receive()
        except anyio.EndOfStream:
            pass
        except TimeoutError:
            error = "timeout"
        except ConnectionRefusedError:
            error = "refused"
        except (ConnectionResetError, anyio.BrokenResourceError):
            error = "reset"
        except OSError as exc:
            error = type(exc).__name__
        if not error:
            error = "" if 0 < status < 400 else (f"http {status}" if status else "no answer")
        return Sample(start, anyio.current_time() - start, not error, error)


def _status(data: bytes) -> int:
    line = data.split(b"\r\n", 1)[0].split()
    if len(line) >= 2 and line[0].startswith(b"HTTP/") and line[1].isdigit():
        return int(line[1])
    return 0
