"""A joined host's agent SIGKILLed mid-fault leaves chaos in force (its timers died with it; the
backstops act only at the fault's end): `fabric host join` started again on its state folder
undoes it at once, before it links: the nft tables and qdiscs of its network faults (their
backstops killed), and the VM processes it held stopped. No controller is needed for that."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio.lowlevel
import psutil
import pytest

from fabric.cluster.ca import ClusterCA, csr_for
from fabric.cluster.node import Identity, JoinState
from fabric.host import hangs, net_faults
from tests.fabric.cluster.joined_kit import FABRIC, poll
from tests.fabric.host.test_net_faults import agent_in, host
from tests.integration.test_e2e_join import free_port_pair
from tests.netns import NetHost, make_net_hosts

__all__ = ["host", "make_net_hosts"]  # fixtures, used by name below

pytestmark = [pytest.mark.timeout(90)]

#: the host id of agent_in's host agent (tests.fabric.host.host_stand_ins.host_config)
NAME = "h1"


def joined_folder(folder: Path) -> None:
    """A host state folder as `fabric host join` leaves it: a valid certificate for NAME (from a
    CA of its own), and a controller address where nobody listens."""
    ca = ClusterCA.open(folder.parent / "ca")
    identity = Identity(folder)
    _, cert = ca.sign_request(csr_for(identity.private_key(), NAME), 3600)
    port = free_port_pair("127.0.0.1")
    state = JoinState(name=NAME, controller="127.0.0.1", host_port=port, join_port=port + 1, cores=1)
    identity.save(cert.decode(), ca.cert_pem.decode(), state)


@contextmanager
def restarted(folder: Path, popen: object = subprocess.Popen) -> Iterator[Path]:
    """`fabric host join --state-dir folder` running (stopped at the end); its log."""
    joined_folder(folder)
    log = folder.parent / "join-again.log"
    with log.open("ab") as out:
        join = popen(
            [FABRIC, "host", "join", "--state-dir", str(folder)], stdout=out, stderr=subprocess.STDOUT
        )  # type: ignore[operator]
    try:
        yield log
    finally:
        join.send_signal(signal.SIGTERM)
        try:
            join.wait(timeout=30)
        except subprocess.TimeoutExpired:
            join.kill()
            join.wait()


def stopped(pid: int) -> bool:
    return bool(psutil.Process(pid).status() == psutil.STATUS_STOPPED)


#: stands in for a joined host's agent: holds the process argv[2] stopped (fabric.host.hangs,
#: as SignalVm does) for 300 s, says so, and waits to be killed
HOLDER = """
import sys, anyio, psutil
from fabric.host.hangs import Hangs, ledger_path
from fabric.host.processes import Proc, signal_processes
async def main():
    pid = int(sys.argv[2])
    proc = Proc(pid, 0, 0, "sleep", psutil.Process(pid).create_time(), "role-host")
    async with anyio.create_task_group() as tg:
        held = Hangs(tg.start_soon, ledger=ledger_path(sys.argv[1], "h1"))
        signal_processes([proc], "stop")
        held.hold([proc], 300)
        while not held.ledger.exists():
            await anyio.sleep(0.01)
        print("held", flush=True)
        await anyio.sleep_forever()
anyio.run(main, backend="trio")
"""


async def test_a_restarted_host_resumes_the_processes_its_killed_agent_held(tmp_path: Path) -> None:
    folder = tmp_path / "host"
    sleeper = subprocess.Popen(["sleep", "300"])
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder), str(sleeper.pid)], stdout=subprocess.PIPE
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        holder.kill()  # SIGKILL: no timer, no resume at its stop
        holder.wait()
        assert stopped(sleeper.pid)
        with restarted(folder) as log:
            await poll(lambda: not stopped(sleeper.pid), 30, "the held process resumed")
            await poll(lambda: "resumed: " + str(sleeper.pid) in log.read_text(), 10, "said in its log")
        assert not hangs.ledger_path(folder, NAME).exists()
    finally:
        for process in (holder, sleeper):
            process.kill()
            process.wait()


async def test_a_restarted_host_undoes_the_network_faults_its_killed_agent_left(host: NetHost) -> None:
    async with agent_in(host) as agent:
        await agent.fault(id="loss1", action="loss", percent=5, duration=300)
        await agent.fault(id="bw1", action="bandwidth", rate=1_000_000, duration=300)
        assert "reddog_nf_loss1" in agent.nft_tables() and "tbf" in agent.qdiscs()
        assert agent.ref.pid is not None
        os.kill(agent.ref.pid, signal.SIGKILL)  # no timer left in the host agent

        def backstops() -> list[int]:
            """The backstops of these faults: sh sleeping 302 s (each with its sleep)."""
            found = []
            for p in psutil.process_iter(["cmdline"]):
                argv = p.info["cmdline"] or []
                if argv[:1] == ["sh"] and "sleep 302.000" in " ".join(argv):
                    found.append(p.pid)
            return found

        assert len(backstops()) == 2  # they would undo it all in 5 minutes
        ledger = net_faults.ledger_path(host.state_dir, NAME)
        assert ledger.exists()
        with restarted(host.state_dir, host.popen) as log:
            await poll(
                lambda: "reddog_nf_" not in host.run("nft", "list", "tables"), 30, "the nft table gone"
            )
            await poll(lambda: "tbf" not in agent.qdiscs(), 10, "the tbf qdisc gone")
            await poll(lambda: "loss1 left in force" in log.read_text(), 10, "said in its log")
        assert backstops() == [] and not ledger.exists()
        with anyio.fail_after(5):
            await anyio.lowlevel.checkpoint()
