"""The kernel data path (nftables DNAT): requests answered by the kernel, rotation, drains,
refusals and toxics falling back to user space, and no nft table left behind."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter

import anyio
import pytest

from fabric.network import Backend, EndpointSpec, Latency, _kernel, open_load_balancer, synced
from tests.paths import ROOT

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("nft") is None, reason="the kernel path needs root and nft"
)

WEB = EndpointSpec("HttpIn", "tcp", 0)


async def tables() -> list[str]:
    """The load balancer tables in the ruleset now."""
    out = (await anyio.run_process(["nft", "list", "tables"])).stdout.decode()
    return re.findall(r"table ip (reddog_lb_\S+)", out)


def own_table(port: int) -> str:
    return f"reddog_lb_{os.getpid()}_{port}"


async def refusing(port: int) -> None:
    """Wait until connects to ``port`` are refused (its listener is closed)."""
    with anyio.fail_after(30):
        while True:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                return
            await stream.aclose()
            await anyio.sleep(0.01)


async def test_requests_are_answered_on_the_kernel_path_round_robin(farm):
    instances = await farm.instances(2)
    async with open_load_balancer(WEB, [i.backend() for i in instances], kernel=True) as lb:
        assert lb.kernel() == ["web_IN_0", "web_IN_1"]
        assert own_table(lb.address[1]) in await tables()
        names = await farm.who(lb.address, 4)
        client = await farm.connect(lb.address)
        assert await client.echo(b"x" * 100_000) == b"x" * 100_000
    assert Counter(names) == {"web_IN_0": 2, "web_IN_1": 2}


async def test_stats_count_the_kernel_paths_connections(farm, until):
    a, b = await farm.instances(2)
    async with open_load_balancer(WEB, [a.backend(), b.backend()], kernel=True) as lb:
        clients = [await farm.connect(lb.address) for _ in range(3)]
        await lb.count()
        stats = lb.stats()
        assert (stats.active, stats.connections) == (3, 3)
        assert {s.instance_id: (s.active, s.connections) for s in stats.backends} == {
            "web_IN_0": (2, 2),
            "web_IN_1": (1, 1),
        }
        await clients[0].aclose()

        async def counted() -> bool:
            await lb.count()
            return lb.stats().active == 2

        with anyio.fail_after(30):
            while not await counted():
                await anyio.sleep(0.05)
        assert lb.stats().connections == 3
        # stats() alone counts again once its count is COUNT_AGE old, off the event loop.
        await farm.connect(lb.address)
        await until(lambda: lb.stats().connections == 4, timeout=30)


async def test_a_status_change_takes_effect_for_the_next_connection(farm):
    a, b = await farm.instances(2)
    async with open_load_balancer(WEB, [a.backend(), b.backend()], kernel=True) as lb:
        lb.update("web_IN_0", busy=True)
        await lb.synced()
        assert lb.kernel() == ["web_IN_1"]
        assert set(await farm.who(lb.address, 4)) == {"web_IN_1"}
        c = await farm.instance("web_IN_2")
        lb.set_backends([a.backend(), c.backend()])
        await lb.synced()
        assert set(await farm.who(lb.address, 4)) == {"web_IN_0", "web_IN_2"}


async def test_a_drained_instance_keeps_its_connection_until_it_is_cut(farm):
    a, b = await farm.instances(2)
    async with open_load_balancer(WEB, [a.backend()], kernel=True) as lb:
        old = await farm.connect(lb.address)
        lb.set_backends([b.backend()])
        with anyio.move_on_after(0.5) as waited:
            await lb.wait_drained(["web_IN_0"])
        assert waited.cancelled_caught  # the connection is still open, so the drain waits
        assert await old.echo(b"still here") == b"still here"
        assert set(await farm.who(lb.address, 2)) == {"web_IN_1"}
        assert lb.cut(["web_IN_0"]) == 1
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
            await old.stream.receive()  # reset, without the client sending anything


async def test_a_drain_ends_when_the_last_kernel_connection_closes(farm):
    a, b = await farm.instances(2)
    async with open_load_balancer(WEB, [a.backend()], kernel=True) as lb:
        old = await farm.connect(lb.address)
        lb.set_backends([b.backend()])
        async with anyio.create_task_group() as tg:
            drained = anyio.Event()

            async def drain() -> None:
                await lb.wait_drained(["web_IN_0"])
                drained.set()

            tg.start_soon(drain)
            await old.aclose()
            with anyio.fail_after(30):
                await drained.wait()


async def test_a_toxic_sends_new_connections_through_user_space_while_in_force(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=True) as lb:
        before = await farm.connect(lb.address)  # on the kernel path
        toxic = lb.add_toxic(Latency(latency=200))
        await lb.synced()
        assert lb.kernel() == []
        client = await farm.connect(lb.address)
        begin = anyio.current_time()
        assert await client.echo(b"slow") == b"slow"
        assert anyio.current_time() - begin >= 0.2
        await lb.count()
        assert [(s.active, s.connections) for s in lb.stats().backends] == [(2, 2)]
        # A connection the kernel opened before the toxic is left alone: it never sees it.
        assert len(lb.toxics()) == 1
        assert a.accepted == 2
        begin = anyio.current_time()
        assert await before.echo(b"fast") == b"fast"
        fast = anyio.current_time() - begin
        assert fast < 0.2
        lb.remove_toxic(toxic)
        await lb.synced()
        assert lb.kernel() == ["web_IN_0"]
        await farm.who(lb.address, 2)
        await lb.count()
        assert lb.stats().connections == 4


async def test_a_refusing_instance_costs_no_client_its_connection(farm, until):
    a, b = await farm.instances(2)
    async with open_load_balancer(WEB, [a.backend(), b.backend()], kernel=True) as lb:
        a.stop()
        await refusing(a.port)
        begin = anyio.current_time()
        # The kernel drops the refusal and moves the endpoint to user space; the client's
        # SYN, sent again (after 1 s), reaches the balancer, which connects it to web_IN_1
        # and marks web_IN_0 refusing, off the kernel path.
        names = await farm.who(lb.address, 6)
        assert set(names) == {"web_IN_1"}
        assert anyio.current_time() - begin < 3
        assert lb.refusing() == ["web_IN_0"]
        await until(lambda: lb.kernel() == [])
        await a.start()
        lb.update("web_IN_0", ready=True)  # a Ready report forgives the refusal
        await lb.synced()
        assert lb.kernel() == ["web_IN_0", "web_IN_1"]
        assert set(await farm.who(lb.address, 2)) == {"web_IN_0", "web_IN_1"}


async def test_stop_removes_the_table_and_resets_kernel_connections(farm):
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=True) as lb:
        client = await farm.connect(lb.address)
        table = own_table(lb.address[1])
    assert table not in await tables()
    with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError, OSError)):
        await client.stream.receive()  # reset, without the client sending anything


CHILD = """
import sys, anyio
from fabric.network import Backend, EndpointSpec, open_load_balancer
async def main(kernel, port, backend):
    spec = EndpointSpec("HttpIn", "tcp", port)
    backends = [Backend("web_IN_0", "127.0.0.1", backend)]
    async with open_load_balancer(spec, backends, kernel=kernel, port_attempts=1) as lb:
        print(lb.address[1], flush=True)
        await anyio.sleep_forever()
anyio.run(main, sys.argv[1] == "kernel", int(sys.argv[2]), int(sys.argv[3]), backend="trio")
"""


async def balancer_process(kernel: bool, port: int, backend: int) -> tuple[anyio.abc.Process, int]:
    """A balancer in a child process (kernel path or not); returns it and its port."""
    argv = ["kernel" if kernel else "user", str(port), str(backend)]
    process = await anyio.open_process(
        [sys.executable, "-c", CHILD, *argv], cwd=ROOT, stderr=subprocess.DEVNULL
    )
    assert process.stdout is not None
    with anyio.fail_after(20):
        return process, int((await process.stdout.receive()).decode())


async def test_a_balancer_restarted_on_its_port_after_a_crash_gets_its_connections(farm):
    a, b = await farm.instances(2)
    crashed, port = await balancer_process(True, 0, a.port)
    async with crashed:
        os.kill(crashed.pid, signal.SIGKILL)
        await crashed.wait()
    assert f"reddog_lb_{crashed.pid}_{port}" in await tables()
    # Restarted without the kernel path: its stale DNAT rule would send clients to web_IN_0.
    again, _ = await balancer_process(False, port, b.port)
    async with again:
        try:
            assert await farm.who(("127.0.0.1", port), 2) == ["web_IN_1", "web_IN_1"]
            assert f"reddog_lb_{crashed.pid}_{port}" not in await tables()
        finally:
            again.kill()


async def test_a_crashed_balancers_table_is_swept_by_the_next_one(farm):
    process, port = await balancer_process(True, 0, 9)
    async with process:
        stale = f"reddog_lb_{process.pid}_{port}"
        assert stale in await tables()
        os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    (a,) = await farm.instances(1)
    async with open_load_balancer(WEB, [a.backend()], kernel=True):
        assert stale not in await tables()


async def test_the_kernel_path_is_the_default_and_reddog_lb_kernel_off_turns_it_off(farm, monkeypatch):
    (a,) = await farm.instances(1)
    monkeypatch.delenv("REDDOG_LB_KERNEL", raising=False)
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        assert lb.kernel() == ["web_IN_0"]
        assert own_table(lb.address[1]) in await tables()
        assert await farm.who(lb.address, 1) == ["web_IN_0"]
    monkeypatch.setenv("REDDOG_LB_KERNEL", "off")
    async with open_load_balancer(WEB, [a.backend()]) as lb:
        assert lb.kernel() is None
        assert own_table(lb.address[1]) not in await tables()
        assert await farm.who(lb.address, 1) == ["web_IN_0"]
        assert lb.stats().connections == 1
    async with open_load_balancer(WEB, [a.backend()], kernel=True) as lb:
        assert lb.kernel() == ["web_IN_0"]  # asked for explicitly, the environment aside


async def test_a_backend_off_loopback_or_by_name_keeps_the_endpoint_in_user_space(farm):
    a, b = await farm.instances(2)
    by_name = Backend("web_IN_1", "localhost", b.port)  # a joined host's instance is given so too
    async with open_load_balancer(WEB, [a.backend(), by_name], kernel=True) as lb:
        assert lb.kernel() == []
        assert sorted(await farm.who(lb.address, 2)) == ["web_IN_0", "web_IN_1"]
        assert lb.stats().connections == 2
        lb.set_backends([a.backend()])
        await lb.synced()
        assert lb.kernel() == ["web_IN_0"]


async def test_a_balancer_that_cannot_take_the_kernel_path_says_why_once(farm, monkeypatch, caplog):
    (a,) = await farm.instances(1)
    monkeypatch.delenv("REDDOG_LB_KERNEL", raising=False)
    monkeypatch.setattr(_kernel, "_explained", set())
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    caplog.set_level(logging.INFO, logger="fabric.network")
    for _ in range(2):
        async with open_load_balancer(WEB, [a.backend()]) as lb:
            assert lb.kernel() is None
            assert await farm.who(lb.address, 1) == ["web_IN_0"]
    [line] = [r.getMessage() for r in caplog.records if "kernel data path" in r.getMessage()]
    assert "not running as root" in line and "REDDOG_LB_KERNEL=off" in line


async def test_the_packages_synced_waits_for_every_balancer_of_the_process(farm):
    a, b = await farm.instances(2)
    async with (
        open_load_balancer(WEB, [a.backend()], kernel=True) as one,
        open_load_balancer(WEB, [a.backend()], kernel=True) as two,
    ):
        one.set_backends([b.backend()])
        two.set_backends([b.backend()])
        await synced()
        assert one.kernel() == two.kernel() == ["web_IN_1"]


async def test_a_killed_balancer_not_reaped_yet_is_swept_too(farm):
    process, port = await balancer_process(True, 0, 9)
    async with process:
        stale = f"reddog_lb_{process.pid}_{port}"
        os.kill(process.pid, signal.SIGKILL)
        stat = f"/proc/{process.pid}/stat"
        with anyio.fail_after(30):  # a zombie until its parent (this test) reaps it
            while (await anyio.Path(stat).read_text()).rpartition(")")[2].split()[0] != "Z":
                await anyio.sleep(0.01)
        (a,) = await farm.instances(1)
        async with open_load_balancer(WEB, [a.backend()], kernel=True):
            assert stale not in await tables()
        await process.wait()
