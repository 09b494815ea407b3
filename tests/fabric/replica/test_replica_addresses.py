"""Joined hosts follow the leader across machines: each replica listens (while it leads) at its
own host-port address; the leader tells every host all of them, the host keeps them in its
join.json, and when its link drops it tries them in turn until the new leader accepts. A host
whose certificate is due renews it with the new leader (the replicas share the cluster CA)."""

from __future__ import annotations

import json
import signal
import stat
import time
from functools import partial
from pathlib import Path

import pytest

from fabric.cluster.ca import validity, verify_signed_by
from tests.fabric.cluster.joined_kit import Cluster as Joined
from tests.fabric.cluster.joined_kit import poll, vms_of
from tests.fabric.replica.replica_kit import cluster, stop_all
from tests.integration.test_e2e_join import free_port_pair
from tests.netns import loopback_hosts
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

LEASE = 3.0
#: the hosts' certificates last this long: each renews 30-40 s after it was issued (the first
#: after the failover, on a loaded machine too), with at least 5 s of it left
CERT_LIFETIME = 45.0


def controllers_of(host_state: Path) -> list[str]:
    """The controller addresses a joined host keeps (its join.json)."""
    try:
        return list(json.loads((host_state / "join.json").read_text()).get("controllers", []))
    except (FileNotFoundError, ValueError):
        return []


def knows(host_state: Path, addresses: set[str]) -> bool:
    return set(controllers_of(host_state)) == addresses


def issued_after(host_state: Path, when: float) -> bool:
    """Whether the host's certificate was issued after ``when`` (Unix time; the CA backdates
    one by a tenth of its life)."""
    try:
        start, end = validity((host_state / "identity.pem").read_bytes())
    except (FileNotFoundError, ValueError):
        return False
    return start.timestamp() + (end - start).total_seconds() / 11 > when


async def test_hosts_link_to_the_new_leader_at_its_own_address(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    with loopback_hosts(2, tmp_path / "hosts") as hosts:
        settings = tmp_path / "settings.toml"
        # only joined hosts run instances; their certificates are renewed during the test
        settings.write_text(f"max_hosts = 0\nhost_certificate_lifetime = {CERT_LIFETIME}\n")
        listen_a = f"127.0.0.1:{free_port_pair('127.0.0.1')}"
        listen_b = f"127.0.0.2:{free_port_pair('127.0.0.2')}"
        async with cluster(tmp_path, postgres, settings) as c:
            a = await c.start("a", "--listen", listen_a)
            assert await c.leader() is a
            await c.start("b", "--listen", listen_b)
            joined = Joined(state=c.state, hosts=hosts, settings=settings, listen=listen_a)
            try:
                await joined.join_all((0, 1))
                await joined.deploy()
                view = await joined.all_ready()
                # Every host knows both replicas' host ports, in a file only it can read.
                for host in hosts:
                    await poll(
                        partial(knows, host.state_dir / "host", {listen_a, listen_b}),
                        30,
                        f"{host.name} knows both replicas",
                    )
                    mode = (host.state_dir / "host" / "join.json").stat().st_mode
                    assert stat.S_IMODE(mode) == 0o600
                placed = {i.id: i.host for i in view.instances}
                running = {name: vms_of(p) for name, p in joined.joins.items()}
                assert sum(len(v) for v in running.values()) == 6

                killed, killed_wall = time.monotonic(), time.time()
                a.process.send_signal(signal.SIGKILL)
                new = await c.leader(not_="a", seconds=LEASE + 30)
                assert new.name == "b"
                # The VMs kept running while nobody led.
                assert {name: vms_of(p) for name, p in joined.joins.items()} == running
                await joined.wait_hosts({h.name for h in hosts}, 60)
                view = await joined.all_ready(60)
                relinked = time.monotonic() - killed
                assert {i.id: i.host for i in view.instances} == placed  # nothing moved
                assert {name: vms_of(p) for name, p in joined.joins.items()} == running  # nothing restarted
                assert all(i.restarts == 0 for i in view.instances), view.instances
                for host in hosts:
                    log = (host.state_dir / "join.log").read_text(errors="replace")
                    assert "127.0.0.2" in log, log[-2000:]
                # Each host's certificate, due, renewed after the kill: by b, the only replica
                # left, with the CA both share (the state folder's).
                ca = (c.state / "cluster" / "ca.pem").read_bytes()
                for host in hosts:
                    await poll(
                        partial(issued_after, host.state_dir / "host", killed_wall),
                        3 * CERT_LIFETIME,
                        f"{host.name}'s certificate renewed by the new leader",
                    )
                    identity = (host.state_dir / "host" / "identity.pem").read_bytes()
                    verify_signed_by(identity, ca)
                    assert (host.state_dir / "host" / "ca.pem").read_bytes() == ca
                verify_signed_by((c.state / "cluster" / "controller-127.0.0.2.pem").read_bytes(), ca)
                print(
                    f"b leads; both hosts linked to it at {listen_b}, all ready {relinked:.1f} s after the kill"
                )
            finally:
                stop_all(joined.joins.values())
