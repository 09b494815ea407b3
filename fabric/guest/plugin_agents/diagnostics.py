"""The Diagnostics plugin agent: ``python -m fabric.guest.plugin_agents.diagnostics``.

Every interval it samples the CPU and memory of each role process (every descendant of the
bootstrapper) into ``DiagnosticStore/Diagnostics/PerformanceCounters.jsonl`` (one JSON object a
line) and copies the role's logs into ``DiagnosticStore/Diagnostics/Logs``. With ``/blockStartup``
it only waits until the agent has initialised.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import psutil  # type: ignore[import-untyped]

from actors import command_line
from fabric.guest.plugin_agents._ready import run_agent, serve_ready

CONNECTION_STRING = "Microsoft_WindowsAzure_Plugins_Diagnostics_ConnectionString"


class Sampler:
    """Samples a process tree; psutil needs the same Process objects between samples for CPU %."""

    def __init__(self, root_pid: int) -> None:
        self.root_pid = root_pid
        self._known: dict[int, psutil.Process] = {}

    def sample(self) -> list[dict[str, Any]]:
        """One record per live descendant of the root (the agent itself included)."""
        try:
            children = psutil.Process(self.root_pid).children(recursive=True)
        except psutil.Error:
            return []
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        records: list[dict[str, Any]] = []
        live: dict[int, psutil.Process] = {}
        for found in children:
            proc = self._known.get(found.pid, found)
            try:
                with proc.oneshot():
                    records.append(
                        {
                            "time": now,
                            "pid": proc.pid,
                            "name": proc.name(),
                            "command": " ".join(command_line(proc.cmdline()))[:200],
                            "cpu_percent": proc.cpu_percent(None),
                            "rss_bytes": proc.memory_info().rss,
                            "threads": proc.num_threads(),
                        }
                    )
                live[proc.pid] = proc
            except psutil.Error:
                continue  # it ended while we looked
        self._known = live
        return records


def copy_logs(source: Path, target: Path) -> int:
    """Copy the *.log files of ``source`` that changed since the last copy; return how many."""
    target.mkdir(parents=True, exist_ok=True)
    copied = 0
    for path in sorted(source.glob("*.log")):
        destination = target / path.name
        with contextlib.suppress(OSError):
            stat = path.stat()
            old = destination.stat() if destination.exists() else None
            if old is None or (old.st_size, old.st_mtime) != (stat.st_size, stat.st_mtime):
                shutil.copy2(path, destination)
                copied += 1
    return copied


async def agent(options: argparse.Namespace, rest: list[str]) -> None:
    """Initialise, tell the /blockStartup task, then sample and copy every interval for ever."""
    extra = argparse.ArgumentParser()
    extra.add_argument("--role-logs", required=True)
    extra.add_argument("--root-pid", type=int, required=True)
    extra.add_argument("--interval", type=float, default=60.0)
    more = extra.parse_args(rest)
    folder = Path(options.store) / "Diagnostics"
    folder.mkdir(parents=True, exist_ok=True)
    samples = folder / "PerformanceCounters.jsonl"
    sampler = Sampler(more.root_pid)
    await anyio.to_thread.run_sync(sampler.sample)  # the first CPU reading only sets the baseline
    state = {
        "plugin": options.plugin,
        "pid": os.getpid(),
        "interval": more.interval,
        "samples": str(samples),
        "connection_string_set": bool(os.environ.get(CONNECTION_STRING)),
    }
    (folder / "agent.json").write_text(json.dumps(state, indent=2) + "\n")
    print(f"Diagnostics agent initialised: sampling every {more.interval:g} s into {samples}", flush=True)

    def sample_and_copy() -> None:
        records = sampler.sample()
        with samples.open("a", encoding="utf-8") as out:
            for record in records:
                out.write(json.dumps(record) + "\n")
        copy_logs(Path(more.role_logs), folder / "Logs")

    async with anyio.create_task_group() as tasks:
        await tasks.start(serve_ready, Path(options.ready), lambda: state)
        while True:
            await anyio.sleep(more.interval)
            await anyio.to_thread.run_sync(sample_and_copy)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent, or with /blockStartup wait for it."""
    return run_agent(argv, "The Diagnostics plugin agent.", agent)


if __name__ == "__main__":
    sys.exit(main())
