"""The portal's instance view: a VM's RoleEnvironment, its processes' CPU and memory (the
Diagnostics plugin's last samples, with each process's user), and its log files tailed live.

    GET /portal/instance?vm=VM                       -> InstanceDetail
    GET /portal/logs/stream?vm=VM&file=NAME          -> text/event-stream: ``line`` events

VM is the VM folder's name (``<service>.<deployment>.<instance>``), one of ``<state>/vms``.
A log stream sends the last TAIL_LINES lines, then each line appended (the file's size is
looked at every FOLLOW_INTERVAL while someone watches: ``tail -f``, on the server).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
import defusedxml.ElementTree as SafeXml  # type: ignore[import-untyped]
import msgspec
import psutil  # type: ignore[import-untyped]

from fabric.frontend._http import Request, Response
from fabric.frontend.api import bad_request, not_found
from fabric.frontend.streams import KEEPALIVE_SECONDS, EventStream, Message, stream_slots
from fabric.guest.log_files import read_log, vm_logs

if TYPE_CHECKING:
    from fabric.frontend.rdfe import Rdfe

TAIL_LINES: Final = 200
FOLLOW_INTERVAL: Final = 0.25
#: a line longer than this is cut (a log is text; a runaway line must not fill a page)
MAX_LINE: Final = 8192
_READ: Final = 64 * 1024
_SAMPLES_TAIL: Final = 256 * 1024


class ProcessSample(msgspec.Struct, frozen=True, kw_only=True):
    """One process of the role, as the Diagnostics plugin last sampled it."""

    pid: int
    ppid: int
    name: str
    user: str
    cpu_percent: float
    rss_bytes: int
    command: str = ""


class InstanceDetail(msgspec.Struct, frozen=True, kw_only=True):
    """What the instance view shows."""

    vm: str
    logs: list[str]
    settings: dict[str, str]
    endpoints: list[dict[str, str]]
    local_storage: list[dict[str, str]]
    samples_at: str
    processes: list[ProcessSample]


async def route(rdfe: Rdfe, r: Request, rest: list[str]) -> Response:
    """Answer ``/portal/instance`` and ``/portal/logs/stream``."""
    rdfe._allow(r, "GET")
    vm = await _vm(rdfe, r.query.get("vm", ""))
    match rest:
        case ["instance"]:
            return Response(200, await anyio.to_thread.run_sync(detail, vm))
        case ["logs", "stream"]:
            logs = await anyio.to_thread.run_sync(vm_logs, vm)
            path = logs.get(r.query.get("file", ""))
            if path is None:
                raise not_found(
                    f"{vm.name} has no log {r.query.get('file', '')!r}; it has: {', '.join(logs) or 'none yet'}"
                )
            return EventStream(r._receive, lambda: tail(path), stream_slots(rdfe))
    raise not_found(f"no portal page at {r.path}")


async def _vm(rdfe: Rdfe, name: str) -> Path:
    vms = rdfe.state_dir / "vms"
    known = await anyio.to_thread.run_sync(lambda: {p.name for p in vms.iterdir()} if vms.is_dir() else set())
    if name not in known:  # only a listed folder: no path is built from what a request says
        raise bad_request(f"no VM named {name!r}", "InvalidQueryParameterValue")
    return vms / name


def detail(vm: Path) -> InstanceDetail:
    """The VM's RoleEnvironment (its newest C/Config/*.xml), logs and last process samples."""
    settings: dict[str, str] = {}
    endpoints: list[dict[str, str]] = []
    storage: list[dict[str, str]] = []
    configs = sorted((vm / "C" / "Config").glob("*.xml"), key=lambda p: p.stat().st_mtime)
    if configs:
        current = SafeXml.parse(configs[-1]).getroot().find("CurrentInstance")
        if current is not None:
            for s in current.iterfind("ConfigurationSettings/ConfigurationSetting"):
                settings[s.get("name", "")] = s.get("value", "")
            endpoints = [dict(e.attrib) for e in current.iterfind("Endpoints/Endpoint")]
            storage = [dict(s.attrib) for s in current.iterfind("LocalResources/LocalResource")]
    samples_at, processes = _last_samples(vm)
    return InstanceDetail(
        vm=vm.name,
        logs=sorted(vm_logs(vm)),
        settings=settings,
        endpoints=endpoints,
        local_storage=storage,
        samples_at=samples_at,
        processes=processes,
    )


def _last_samples(vm: Path) -> tuple[str, list[ProcessSample]]:
    files = list(
        (vm / "C" / "Resources" / "Directory").glob("*.DiagnosticStore/Diagnostics/PerformanceCounters.jsonl")
    )
    if not files:
        return "", []
    newest = max(files, key=lambda p: p.stat().st_mtime)
    start = max(0, newest.stat().st_size - _SAMPLES_TAIL)
    lines = _read(newest, start, _SAMPLES_TAIL).decode("utf-8", errors="replace").splitlines()
    if start > 0:
        lines = lines[1:]  # the first one is cut
    records: list[dict[str, Any]] = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    if not records:
        return "", []
    last = records[-1]["time"]
    out = []
    for rec in (r for r in records if r.get("time") == last):
        try:
            proc = psutil.Process(rec["pid"])
            ppid, user = proc.ppid(), proc.username()
        except (psutil.Error, KeyError):
            ppid, user = 0, "?"  # gone since the sample
        out.append(
            ProcessSample(
                pid=rec["pid"],
                ppid=ppid,
                name=str(rec.get("name", "")),
                user=user,
                cpu_percent=float(rec.get("cpu_percent", 0.0)),
                rss_bytes=int(rec.get("rss_bytes", 0)),
                command=str(rec.get("command", "")),
            )
        )
    return str(last), out


async def tail(path: Path) -> AsyncIterator[Message | None]:
    """The last TAIL_LINES lines of a file, then each line appended; None when idle a while."""
    file = anyio.Path(path)
    try:
        size = (await file.stat()).st_size
        start = max(0, size - _READ)
        data = await anyio.to_thread.run_sync(_read, path, start, size - start)
    except OSError:  # gone, or swapped for a link by the VM's account
        return
    lines = data.decode("utf-8", errors="replace").splitlines()
    if start > 0:
        lines = lines[1:]  # the first one is cut
    for line in lines[-TAIL_LINES:]:
        yield ("line", json.dumps(line[:MAX_LINE]), "")
    offset, partial, idle = size, b"", 0.0
    while True:
        await anyio.sleep(FOLLOW_INTERVAL)
        try:
            now = (await file.stat()).st_size
        except FileNotFoundError:
            return
        if now < offset:  # truncated or replaced: start over from its beginning
            offset, partial = 0, b""
        if now == offset:
            idle += FOLLOW_INTERVAL
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                yield None
            continue
        idle = 0.0
        try:
            chunk = await anyio.to_thread.run_sync(_read, path, offset, min(now - offset, _READ))
        except OSError:
            return
        offset += len(chunk)
        *complete, partial = (partial + chunk).split(b"\n")
        for raw in complete:
            yield ("line", json.dumps(raw.decode("utf-8", errors="replace")[:MAX_LINE]), "")
        if len(partial) > MAX_LINE:
            yield ("line", json.dumps(partial.decode("utf-8", errors="replace")[:MAX_LINE]), "")
            partial = b""


def _read(path: Path, offset: int, count: int) -> bytes:
    return read_log(path, offset, count)[0]
