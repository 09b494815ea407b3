"""Real hosts and VMs: an instance the controller reboots or upgrades leaves rotation and drains
first, so a slow response in flight through the load balancer completes; one that outlives
drain_timeout is reset, and the reboot goes on. The controller answers meanwhile."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest

from actors import Ref, open_system
from fabric.controller import FabricController, ask, wait_operation
from fabric.controller.messages import InstanceAction, OperationAccepted, UpgradeDeployment
from fabric.settings import Settings
from tests.fabric.controller.controller_kit import all_ready, create, free_port, view, wait_view
from tests.fabric.controller.test_real_hosts import echo_service

pytestmark = pytest.mark.slow

# GET /<seconds>: the headers at once, the body that many seconds later.
SLOW_WORKER = """
import anyio

from roles import RoleEntryPoint, RoleEnvironment


class Slow(RoleEntryPoint):
    async def run(self) -> None:
        me = RoleEnvironment.current_instance
        host, port = me.instance_endpoints["Http"].ip_endpoint

        async def answer(stream):
            async with stream:
                request = b""
                while b"\\r\\n\\r\\n" not in request:
                    request += await stream.receive()
                seconds = float(request.split()[1].strip(b"/"))
                body = b"answered by " + me.id.encode()
                head = b"HTTP/1.1 200 OK\\r\\nConnection: close\\r\\nContent-Length: %d\\r\\n\\r\\n"
                await stream.send(head % len(body))
                await anyio.sleep(seconds)
                await stream.send(body)

        listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
        await listener.serve(answer)
"""

CONFIG = """
service_name = "Demo"

[[roles]]
name = "Front"
instances = 1

[[roles.settings]]
name = "Greeting"
value = "hello"
"""


def slow_service(root: Path, port: int) -> Path:
    """One worker instance answering GET /<seconds> slowly on its Http input endpoint."""
    folder = echo_service(root, port)
    (folder / "Front" / "worker.py").write_text(SLOW_WORKER)
    (folder / "config.toml").write_text(CONFIG)
    return folder


@asynccontextmanager
async def deployed(tmp_path: Path, drain_timeout: float) -> AsyncIterator[tuple[Ref, Path, int]]:
    """A controller with real hosts and the slow service deployed and Ready: (ref, folder, port)."""
    folder = slow_service(tmp_path / "slow", free_port())
    settings = Settings.fast(max_hosts=2, host_cores=2, drain_timeout=drain_timeout)
    async with open_system() as system:
        ref = await system.spawn(lambda: FabricController(tmp_path / "state", settings), name="controller")
        assert (await create(ref, folder, configuration=CONFIG.encode())).status == "Succeeded"
        v = await wait_view(ref, all_ready, timeout=60)
        yield ref, folder, v.endpoints[0].port


class SlowRequest:
    """GET /<seconds> through the load balancer; ``started`` is set once the headers came."""

    def __init__(self, port: int, seconds: float) -> None:
        self.port = port
        self.seconds = seconds
        self.started = anyio.Event()
        self.answer = b""
        self.error: BaseException | None = None

    async def run(self) -> None:
        try:
            async with await anyio.connect_tcp("127.0.0.1", self.port) as stream:
                await stream.send(f"GET /{self.seconds} HTTP/1.1\r\nHost: demo\r\n\r\n".encode())
                while True:
                    self.answer += await stream.receive()
                    if b"\r\n\r\n" in self.answer:
                        self.started.set()
        except anyio.EndOfStream:
            pass
        except (anyio.BrokenResourceError, OSError) as exc:
            self.error = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
        finally:
            self.started.set()


async def reboot_during(tg: anyio.abc.TaskGroup, ref: Ref, request: SlowRequest) -> OperationAccepted:
    """Start ``request`` in ``tg``; once its response has begun, reboot its instance."""
    tg.start_soon(request.run)
    with anyio.fail_after(20):
        await request.started.wait()
    accepted: OperationAccepted = await ask(
        ref, InstanceAction(service="demo", slot="production", instance_id="Front_IN_0", action="reboot")
    )
    return accepted


@pytest.mark.timeout(120)
async def test_a_reboot_lets_a_slow_response_in_flight_finish(tmp_path: Path) -> None:
    async with deployed(tmp_path, drain_timeout=30.0) as (ref, _, port):
        request = SlowRequest(port, seconds=4)
        async with anyio.create_task_group() as tg:
            reboot = await reboot_during(tg, ref, request)
            # Draining runs in the operation's task: the controller answers meanwhile, and the
            # instance is not stopped yet (its response is still coming).
            with anyio.fail_after(2):
                during = await view(ref)
            assert during.instances[0].status == "ReadyRole"
            assert request.answer.endswith(b"\r\n\r\n")
        assert request.error is None
        assert request.answer.endswith(b"answered by Front_IN_0"), request.answer
        done = await wait_operation(ref, reboot.request_id, timeout=60)
        assert done.status == "Succeeded", done
        after = await wait_view(ref, all_ready, timeout=60)
        assert after.instances[0].restarts == 1  # the reboot did happen, after the response


@pytest.mark.timeout(120)
async def test_an_upgrade_lets_a_slow_response_in_flight_finish(tmp_path: Path) -> None:
    async with deployed(tmp_path, drain_timeout=30.0) as (ref, folder, port):
        request = SlowRequest(port, seconds=4)
        async with anyio.create_task_group() as tg:
            tg.start_soon(request.run)
            with anyio.fail_after(20):
                await request.started.wait()
            (folder / "Front" / "worker.py").write_text(SLOW_WORKER.replace("answered by", "v2 of"))
            upgrade = await ask(
                ref,
                UpgradeDeployment(service="demo", slot="production", package_path=str(folder), mode="Auto"),
            )
        assert request.error is None
        assert request.answer.endswith(b"answered by Front_IN_0"), request.answer
        done = await wait_operation(ref, upgrade.request_id, timeout=60)
        assert done.status == "Succeeded", done
        await wait_view(ref, all_ready, timeout=60)
        second = SlowRequest(port, seconds=0)
        with anyio.fail_after(20):
            await second.run()
        assert second.answer.endswith(b"v2 of Front_IN_0"), second.answer


@pytest.mark.timeout(120)
async def test_a_connection_outliving_the_drain_timeout_is_reset_and_the_reboot_goes_on(
    tmp_path: Path,
) -> None:
    async with deployed(tmp_path, drain_timeout=1.0) as (ref, _, port):
        request = SlowRequest(port, seconds=300)
        async with anyio.create_task_group() as tg:
            reboot = await reboot_during(tg, ref, request)
            with anyio.fail_after(20):  # not the 300 s the response would take
                await wait_operation(ref, reboot.request_id, timeout=60)
        # The load balancer reset it at the drain timeout (a stopped instance would close it).
        assert isinstance(request.error, ConnectionResetError), request.error
        assert b"answered by" not in request.answer
        after = await wait_view(ref, all_ready, timeout=60)
        assert after.instances[0].restarts == 1
