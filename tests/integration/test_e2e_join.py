"""Hosts joining a real `fabric serve --listen` over the network (loopback aliases stand in for
machines; network namespaces come later): a token buys a certificate; bad, expired or revoked
tokens and a wrong CA hash are refused with one line and exit 2; a joined host renews its
certificate before it ends, comes back after SIGKILL with its certificate alone, links again by
itself when the controller restarts, and re-joins with a new token once its certificate expired
while it was away."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.abc
import pytest

from fabric.cluster.ca import validity
from tests.integration.test_e2e_cli import Output

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]

FABRIC = str(Path(sys.executable).with_name("fabric"))
CONTROLLER = "127.0.0.2"
#: a joined host's certificate lasts this long here: renewed at 70-90% of it (11-15 s)
LIFETIME = 16.0
#: what a host's certificate must have left before a step it must survive (a process start, a
#: controller restart): ample on a loaded machine, and less than a fresh certificate's life
MARGIN = 10.0


def free_port_pair(host: str) -> int:
    """A port P on ``host`` with P + 1 free too (the host port and the join port)."""
    for _ in range(100):
        with socket.socket() as first:
            first.bind((host, 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind((host, port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError("no two free ports in a row")


async def fabric(*args: str) -> subprocess.CompletedProcess[bytes]:
    return await anyio.run_process([FABRIC, *args], check=False)


async def refused(args: list[str], why: str) -> None:
    """`fabric host join ...` exits 2 with one line naming ``why``."""
    result = await fabric("host", "join", *args)
    err = result.stderr.decode().strip()
    assert result.returncode == 2, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and why in err, err


async def joined_hosts(state: Path) -> dict[str, dict[str, object]]:
    result = await fabric("hosts", "--json", "--state-dir", str(state))
    assert result.returncode == 0, result.stderr
    return {h["name"]: h for h in map(json.loads, result.stdout.decode().splitlines())}


async def wait_connected(state: Path, name: str, pid: int, seconds: float = 30.0) -> None:
    with anyio.fail_after(seconds):
        while True:
            host = (await joined_hosts(state)).get(name)
            if host and host["connected"] and host["pid"] == pid:
                return
            await anyio.sleep(0.2)


@asynccontextmanager
async def running(command: list[str]) -> AsyncIterator[anyio.abc.Process]:
    """A child process (output and errors on one pipe), SIGKILLed if still running at the end."""
    process = await anyio.open_process(command, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        with anyio.move_on_after(30, shield=True):
            await process.wait()
        await process.aclose()


async def linked(host: anyio.abc.Process) -> None:
    """Wait until the host agent says it is linked; its last lines of output when it is not."""
    output = Output(host)
    try:
        await output.wait_for("linked to the controller", 30)
    except TimeoutError:
        raise AssertionError("\n".join(["the host did not link:", *output.lines[-40:]])) from None


async def lasting(host_state: Path, seconds: float = MARGIN) -> None:
    """Wait until the host's certificate has ``seconds`` left (the host renewing it if need be)."""
    with anyio.fail_after(LIFETIME * 2):
        while validity((host_state / "identity.pem").read_bytes())[1].timestamp() - time.time() < seconds:
            await anyio.sleep(0.2)


async def stop(process: anyio.abc.Process, how: int = signal.SIGTERM) -> None:
    if process.returncode is None:
        process.send_signal(how)
    with anyio.fail_after(30):
        await process.wait()


async def test_join_refusals_renewal_and_restarts(tmp_path: Path) -> None:
    state, host_state = tmp_path / "controller", tmp_path / "host-a"
    port = free_port_pair(CONTROLLER)
    address = f"{CONTROLLER}:{port}"
    settings = tmp_path / "settings.toml"
    settings.write_text(f"host_certificate_lifetime = {LIFETIME}\n")
    serve = [
        FABRIC,
        "serve",
        "--fast",
        "--settings",
        str(settings),
        "--listen",
        address,
        "--state-dir",
        str(state),
    ]
    async with running(serve) as controller:
        # It says which ports the host machines must reach (the README's Several machines).
        ports = await Output(controller).wait_for("every host machine must reach both")
        assert f"host port {address} (mutual TLS) and join port {CONTROLLER}:{port + 1}:" in ports
        made = await fabric("token", "create", "--ttl", "10m", "--state-dir", str(state))
        assert made.returncode == 0, made.stderr
        token = made.stdout.decode().strip()
        join_line = made.stderr.decode().splitlines()[-1].strip()
        assert join_line.startswith(f"fabric host join {address} --token {token} --ca-hash sha256:")
        ca_hash = join_line.rsplit(" ", 1)[1]
        base = [address, "--name", "host-a", "--state-dir", str(host_state)]

        # Refusals: each one line, exit 2, and nothing kept.
        await refused([*base, "--token", "abcdef.0123456789abcdef", "--ca-hash", ca_hash], "not valid")
        await refused([*base, "--token", token, "--ca-hash", "sha256:" + "0" * 64], "not the pinned")
        await refused([*base, "--token", "oops", "--ca-hash", ca_hash], "malformed")
        revoked = (await fabric("token", "create", "--state-dir", str(state))).stdout.decode().strip()
        assert (
            await fabric("token", "delete", revoked.split(".")[0], "--state-dir", str(state))
        ).returncode == 0
        await refused([*base, "--token", revoked, "--ca-hash", ca_hash], "not valid")
        short = (
            (await fabric("token", "create", "--ttl", "1s", "--state-dir", str(state)))
            .stdout.decode()
            .strip()
        )
        await anyio.sleep(1.2)
        await refused([*base, "--token", short, "--ca-hash", ca_hash], "expired")
        assert not (host_state / "identity.pem").exists()
        await refused(["--state-dir", str(host_state)], "no joined host")  # no certificate, no address
        await refused([address, "--state-dir", str(host_state)], "missing")  # no certificate, no token

        # A good token: a certificate, owner-only, and a link the controller hears.
        join = [FABRIC, "host", "join", *base, "--token", token, "--ca-hash", ca_hash, "--cores", "3"]
        async with running(join) as host:
            await linked(host)
            await wait_connected(state, "host-a", host.pid)
            listed = (await joined_hosts(state))["host-a"]
            assert listed["cores"] == 3 and listed["address"] == "127.0.0.1"
            for name in ("key.pem", "identity.pem", "ca.pem", "join.json"):
                assert (host_state / name).stat().st_mode & 0o077 == 0, name
            first = validity((host_state / "identity.pem").read_bytes())

            # Renewal, at 70-90% of the certificate's life, over TLS showing the current one.
            with anyio.fail_after(LIFETIME * 2):
                while validity((host_state / "identity.pem").read_bytes()) == first:
                    await anyio.sleep(0.2)
            renewed = validity((host_state / "identity.pem").read_bytes())
            assert renewed[1] > first[1]
            await wait_connected(state, "host-a", host.pid)

            # SIGKILLed and started again: its certificate alone links it (no token, no address).
            await lasting(host_state)
            await stop(host, signal.SIGKILL)
        again = [FABRIC, "host", "join", "--name", "host-a", "--state-dir", str(host_state)]
        async with running(again) as host:
            await linked(host)
            await wait_connected(state, "host-a", host.pid)
            # The controller restarts: the host links again by itself (with its certificate
            # renewed first if it would end before the controller is back).
            await lasting(host_state)
            await stop(controller)
            async with running(serve) as restarted:
                await Output(restarted).wait_for("fabric serving")
                await wait_connected(state, "host-a", host.pid)
                await stop(host, signal.SIGKILL)

                # Away until its certificate expired: refused without a token, re-joins with a new one.
                expires = validity((host_state / "identity.pem").read_bytes())[1].timestamp()
                await anyio.sleep(max(0.0, expires - time.time() + 0.5))
                await refused(["--state-dir", str(host_state)], "expired")
                made = await fabric("token", "create", "--state-dir", str(state))
                fresh = made.stdout.decode().strip()
                rejoin = [FABRIC, "host", "join", *base, "--token", fresh, "--ca-hash", ca_hash]
                async with running(rejoin) as host:
                    await linked(host)
                    await wait_connected(state, "host-a", host.pid)
                    await stop(host)
                await stop(restarted)
