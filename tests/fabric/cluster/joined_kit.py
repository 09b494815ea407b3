"""A real `fabric serve --listen` and `fabric host join` processes on test hosts (namespace hosts
as root, else loopback aliases), and ways to look at what runs where."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import httpx
import psutil

from actors import command_line
from fabric.client import AsyncFabricClient
from fabric.client.deployments import deploy_service, finish
from fabric.client.errors import NoFabricRunning
from fabric.client.shell import ShellSession
from fabric.controller.messages import DeploymentView
from tests.fabric.certs.cert_kit import leaf, make_ca, pem_file
from tests.integration.e2e_kit import SERVICES, copy_service
from tests.integration.test_e2e_join import free_port_pair
from tests.netns import NetHost, NetHosts

FABRIC = str(Path(sys.executable).with_name("fabric"))
SPREAD = Path(__file__).resolve().parent / "services" / "spread"


async def poll(check: Callable[[], Any], seconds: float, what: str) -> Any:
    """Call ``check`` (sync or async) until it returns something true; fail naming ``what``."""
    try:
        with anyio.fail_after(seconds):
            while True:
                result = check()
                if isinstance(result, Awaitable):
                    result = await result
                if result:
                    return result
                await anyio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"not within {seconds:g} s: {what}") from None


@dataclass
class Cluster:
    """A controller and the hosts that join it."""

    state: Path
    hosts: NetHosts
    settings: Path
    listen: str = ""
    serve: subprocess.Popen[bytes] | None = None
    joins: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    token: str = ""
    ca_hash: str = ""

    def client(self) -> AsyncFabricClient:
        return AsyncFabricClient(self.state)

    async def start_controller(self) -> None:
        """`fabric serve --fast --listen` on the hosts' gateway (the same port every time)."""
        if not self.listen:
            self.listen = f"{self.hosts.gateway}:{free_port_pair(self.hosts.gateway)}"
        log = (self.state.parent / "serve.log").open("ab")
        self.serve = subprocess.Popen(
            [
                FABRIC,
                "serve",
                "--fast",
                "--settings",
                str(self.settings),
                "--listen",
                self.listen,
                "--state-dir",
                str(self.state),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        await poll(self._answers, 60, "fabric serve answering")

    async def _answers(self) -> bool:
        if self.serve is None or self.serve.poll() is not None:
            raise AssertionError(f"fabric serve ended; see {self.state.parent / 'serve.log'}")
        if not (self.state / "cluster" / "listen").exists():
            return False
        try:
            async with self.client() as client:
                await client.hosts()
        except (NoFabricRunning, OSError, httpx.HTTPError):
            return False
        return True

    def serve_log(self) -> str:
        """What fabric serve logged (warnings and errors)."""
        return (self.state.parent / "serve.log").read_text(errors="replace")

    async def stop_controller(self) -> None:
        assert self.serve is not None
        self.serve.send_signal(signal.SIGTERM)
        await poll(
            lambda: self.serve is not None and self.serve.poll() is not None, 60, "fabric serve stopped"
        )

    async def make_token(self) -> None:
        async with self.client() as client:
            made = await client.create_token(600)
        self.token, self.ca_hash = made.token, made.ca_hash

    def join(self, host: NetHost, *, fault_domain: int, first: bool = True) -> subprocess.Popen[bytes]:
        """`fabric host join` on ``host`` (with the token the first time, its certificate after)."""
        argv = [FABRIC, "host", "join"]
        if first:
            argv += [self.listen, "--token", self.token, "--ca-hash", self.ca_hash]
        argv += ["--name", host.name, "--address", host.address, "--cores", "4"]
        argv += ["--fault-domain", str(fault_domain), "--state-dir", str(host.state_dir / "host")]
        log = (host.state_dir / "join.log").open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = host.popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.joins[host.name] = process
        return process

    async def join_all(self, domains: tuple[int, ...]) -> None:
        """Join every host (the i-th in fault domain ``domains[i]``); wait until all are Ready."""
        await self.make_token()
        for host, domain in zip(self.hosts, domains, strict=True):
            self.join(host, fault_domain=domain)
        await self.wait_hosts({h.name for h in self.hosts})

    async def ready_hosts(self) -> set[str]:
        async with self.client() as client:
            return {h.name for h in await client.all_hosts() if h.kind == "joined" and h.state == "Ready"}

    async def wait_hosts(self, names: set[str], seconds: float = 60) -> None:
        await poll(lambda: self._have(names), seconds, f"hosts {sorted(names)} Ready")

    async def _have(self, names: set[str]) -> bool:
        for host in self.hosts:
            process = self.joins.get(host.name)
            if host.name in names and process is not None and process.poll() is not None:
                said = (host.state_dir / "join.log").read_text(errors="replace").strip().splitlines()
                raise AssertionError(
                    f"fabric host join on {host.name} ended ({process.returncode}): {said[-1:] or 'no log'}"
                )
        return names <= await self.ready_hosts()

    async def deploy(self, seconds: float = 120) -> DeploymentView:
        """Deploy the spread service; fail naming what its instances show if its operation has
        not ended within ``seconds``."""
        async with self.client() as client:
            started = await deploy_service(client, SPREAD, None, wait=False)
            try:
                with anyio.fail_after(seconds):
                    await finish(client, started.request_id, started.title)
            except TimeoutError:
                try:
                    with anyio.fail_after(10):
                        shown = await client.deployment(started.service, started.slot)
                    statuses = str(
                        sorted(f"{i.id} {i.status} on {i.host or '-'} {i.detail}" for i in shown.instances)
                    )
                except Exception as exc:  # the controller may be what is broken: say so
                    statuses = f"no view of it ({type(exc).__name__}: {exc})"
                raise AssertionError(f"not within {seconds:g} s: {started.title} ended; {statuses}") from None
            return await client.deployment(started.service, started.slot)

    async def view(self) -> DeploymentView:
        async with self.client() as client:
            return (await client.deployments())[0]

    async def all_ready(self, seconds: float = 120, avoid: str = "", count: int = 6) -> DeploymentView:
        async def ready() -> DeploymentView | None:
            view = await self.view()
            ok = len(view.instances) == count and all(
                i.status == "ReadyRole" and i.host != avoid for i in view.instances
            )
            return view if ok else None

        view: DeploymentView = await poll(
            ready, seconds, f"{count} instances ReadyRole" + (f" off {avoid}" if avoid else "")
        )
        return view


@asynccontextmanager
async def cluster(hosts: NetHosts, tmp_path: Path, **settings: object) -> AsyncIterator[Cluster]:
    """A controller (max_hosts = 0: only joined hosts run instances) and its hosts; every
    process is stopped at the end."""
    lines = ["max_hosts = 0"] + [f"{k} = {v!r}" for k, v in settings.items()]
    path = tmp_path / "settings.toml"
    path.write_text("\n".join(lines) + "\n")
    found = Cluster(state=tmp_path / "controller", hosts=hosts, settings=path)
    try:
        yield found
    finally:
        for process in [*found.joins.values(), found.serve]:
            if process is not None and process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGCONT)
                process.send_signal(signal.SIGTERM)
        for process in [*found.joins.values(), found.serve]:
            if process is not None:
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def vms_of(process: subprocess.Popen[bytes]) -> dict[str, int]:
    """The VMs a `fabric host join` process runs: instance id (``Hello_IN_0``) -> pid."""
    found: dict[str, int] = {}
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.Error:
        return found
    for proc in children:
        try:
            name = command_line(proc.cmdline())[6:7]
        except psutil.Error:
            continue
        if name and name[0].startswith("vm:"):
            found[name[0].rsplit(".", 1)[-1]] = proc.pid
    return found


async def answers(url: str, count: int) -> list[str]:
    """``count`` answers from ``url`` (each a fresh connection: the balancer rotates)."""
    got = []
    for _ in range(count):
        async with httpx.AsyncClient(timeout=5.0) as client:
            response = await client.get(url)
        assert response.status_code == 200, response.text
        got.append(response.text.strip())
    return got


async def one_joined_host(c: Cluster) -> None:
    """Start the controller and join its first host (fault domain 0); wait until it is Ready."""
    await c.start_controller()
    await c.make_token()
    c.join(c.hosts[0], fault_domain=0)
    await c.wait_hosts({c.hosts[0].name})


async def deploy_remote_shell(c: Cluster, tmp_path: Path) -> None:
    """Deploy the one-instance "remote" service (tests/integration/services/remote, RemoteAccess
    on with a certificate of its own) and wait until Shell_IN_0 is ReadyRole."""
    made = leaf(make_ca(), "remote.test")
    async with c.client() as client:
        await client.create_hosted_service("remote")
        await client.add_certificate("remote", pem_file(made), certificate_format="pem")
        replace = {"ENABLED": "true", "EXPIRATION": "2099-12-31T23:59:59.0000000+00:00"}
        service = copy_service(
            SERVICES / "remote", tmp_path, replace={**replace, "THUMBPRINT": made.thumbprint}
        )
        await deploy_service(client, service, None, service="remote")
    await c.all_ready(count=1)


def in_foreground(argv: list[str]) -> int | None:
    """A process this test started (at any depth) that runs ``argv`` and holds the foreground
    of its terminal (a Ctrl-C typed now reaches it); its pid, or None."""
    for proc in psutil.Process().children(recursive=True):
        try:
            if proc.cmdline() != argv:
                continue
            # /proc/PID/stat after the command's ")": state ppid pgrp session tty_nr tpgid ...
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (psutil.Error, OSError):
            continue
        if int(fields[5]) == int(fields[2]):
            return proc.pid
    return None


async def until_foreground(argv: list[str], seconds: float = 60) -> int:
    """Wait until a shell has started ``argv`` and given it the terminal: a Ctrl-C sent earlier
    reaches the shell alone (between its fork and the child taking the terminal), and the
    command then runs to its end. Its pid."""
    found: int = await poll(lambda: in_foreground(argv), seconds, f"{' '.join(argv)} in the foreground")
    return found


async def screen_until(shell: ShellSession, pattern: bytes, seconds: float = 20) -> re.Match[bytes]:
    """Read the remote screen until ``pattern`` (a regex) shows; its match."""
    shown = b""
    with anyio.fail_after(seconds):
        while (found := re.search(pattern, shown)) is None:
            item = await shell.receive()
            assert item is not None, shown
            if isinstance(item, bytes):
                shown += item
    return found
