"""The fabric's role host, run in process for a harness: told its entry point class directly,
and watched (its reports, its log, the messages it has handled)."""

from __future__ import annotations

import logging
from typing import Any

import anyio

from roles.entry_point import RoleEntryPoint
from roles.hosts._lifecycle import EntryPointHost
from roles.hosts.iis import IISHost
from roles.hosts.worker import WorkerHost
from roles.protocol import RoleHostConfig, RoleHostPhase


class Observer(logging.Handler):
    """What the harness sees of its role host: its reports, its log, the last error it logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        self.reports: list[tuple[RoleHostPhase, str]] = []
        self.lines: list[str] = []
        self.last_error: BaseException | None = None
        #: the exception logged last before the host reported "failed": the role's own error
        self.failure_cause: BaseException | None = None
        self.handled = 0
        #: the host actor is gone (stopped, recycled or crashed)
        self.ended = False
        self.news = anyio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the host's log line, and the exception it logged (the cause of a failure)."""
        self.lines.append(self.format(record).splitlines()[0])
        if record.exc_info and record.exc_info[1] is not None:
            self.last_error = record.exc_info[1]

    def notify(self) -> None:
        self.news.set()
        self.news = anyio.Event()


class UnderTest(EntryPointHost):
    """The fabric's role host, told its entry point class directly and watched by the harness."""

    def __init__(
        self, config: RoleHostConfig, entry_class: type[RoleEntryPoint] | None, observer: Observer
    ) -> None:
        super().__init__(config)
        self._entry_class = entry_class
        self._observer = observer

    def find_entry_class(self) -> type[RoleEntryPoint] | None:
        """The class the test gave, else the search of the role's code folder the fabric does."""
        if self._entry_class is not None:
            return self._entry_class
        return super().find_entry_class()

    async def report(self, phase: RoleHostPhase, detail: str = "") -> None:
        """Log the phase as the fabric's host does, and let the harness see it."""
        await super().report(phase, detail)
        if phase == "failed":
            self._observer.failure_cause = self._observer.last_error
        self._observer.reports.append((phase, detail))
        self._observer.notify()

    async def receive(self, message: Any) -> Any:
        """Handle a message as the fabric's host does, then count it as handled."""
        try:
            return await super().receive(message)
        finally:
            self._observer.handled += 1
            self._observer.notify()


class WorkerUnderTest(UnderTest, WorkerHost):
    """WaWorkerHost under test."""


class WebUnderTest(UnderTest, IISHost):
    """WaIISHost under test (the role's entry point; its sites are not served)."""
