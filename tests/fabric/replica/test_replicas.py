"""Controller replicas for real: `fabric serve --replica` processes on one state folder and a real
PostgreSQL server; leaders SIGKILLed and SIGSTOPped, the database restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import httpx
import pytest

from fabric.client.deployments import deploy_service
from fabric.client.errors import ApiRefused
from fabric.cluster.port import read_listen
from fabric.frontend.auth import read_token
from tests.fabric.replica.replica_kit import FABRIC, Cluster, alive, cluster, eventually
from tests.paths import EXAMPLES
from tests.pg_server import PostgresServer

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]

HELLO = EXAMPLES / "hello-worker"
#: the fast profile's lease (Settings.fast: leader_lease_duration)
LEASE = 3.0


async def test_leader_killed_the_other_leads_and_completes_what_was_acknowledged(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    async with cluster(tmp_path, postgres) as c:
        old, new = await c.two()
        async with c.client(new) as client:
            assert await client.subscription()  # the follower answers (forwarded)
            # A deployment the leader shows (and wrote to its views in the database).
            shown = await deploy_service(client, HELLO, None)
            view_row = f"deployment/{shown.service}/production"

            async def stored() -> bool:
                return bool(await c.sql("SELECT 1 FROM fabric_views WHERE key = %s", view_row))

            await eventually(stored, 30, "the leader's views of the deployment in the database")
            doomed = c.descendants(old)
            # A deploy through the follower (forwarded to the leader), acknowledged with a request
            # id; the leader is killed at once, while the operation runs (it starts a VM: far
            # longer than the acknowledgement's way back).
            started = await deploy_service(client, HELLO, None, slot="staging", wait=False)
            killed_at = anyio.current_time()
            old.process.send_signal(signal.SIGKILL)
            await old.process.wait()
            # at once, before the lease expires: the follower answers reads from the database
            # (what `fabric status` reads, with a new client), and refuses a change with a 503
            # and Retry-After, changing nothing
            async with c.client(new) as fresh:
                [page] = [p for p in await fresh.deployment_pages() if p.deployment.slot == "production"]
            assert (page.deployment.service, page.total) == (shown.service, 1), page
            assert [i.id for i in page.deployment.instances] == ["HelloWorker_IN_0"], page
            async with httpx.AsyncClient(base_url=new.url, headers=auth(c)) as raw:
                answer = await raw.get(await client._services(), params={"embed-detail": "true"})
                change = await raw.post(
                    await client._slot(shown.service, "production"),
                    params={"comp": "status"},
                    json={"Status": "Running"},
                )
            assert answer.status_code == 200 and answer.headers["x-fabric-answered-by"] == new.name
            assert answer.headers["x-fabric-written-at"], answer.headers  # from the stored views
            assert shown.service in answer.text, answer.text
            assert change.status_code == 503 and int(change.headers["retry-after"]) >= 1, change.text
            # the follower answers the operation's state from the goal state itself
            op = await client.operation(started.request_id)
            assert op.status == "InProgress", op

            async def leads() -> bool:
                row = await c.lease()
                return bool(row and row["live"] and row["holder"] == new.name)

            await eventually(leads, LEASE + 2.0, f"{new.name} leading within lease + 2 s")
            leading_after = anyio.current_time() - killed_at
            await c.leader(not_=old.name)

            async def answers() -> bool:
                try:
                    return bool(await client.deployment(started.service, "staging"))
                except ApiRefused as exc:
                    assert exc.status == 503, exc  # an election: 503 with Retry-After, nothing else
                    return False

            await eventually(answers, 60, "the new leader answering the API")
            op = await client.wait(started.request_id)
            assert op.status == "Succeeded", op

            async def ready() -> bool:
                views = [await client.deployment(shown.service, slot) for slot in ("production", "staging")]
                return [i.status for v in views for i in v.instances] == ["ReadyRole"] * 2

            await eventually(ready, 60, "both deployments' instances ReadyRole")
        # the killed leader's own processes went with it (its local hosts are not among them:
        # they outlive it, see test_replica_local_hosts)
        await eventually(lambda: _none_alive(doomed), 30, "the killed leader's processes gone")
        print(f"leading {leading_after:.2f} s after the kill (lease {LEASE:g} s)")


async def _none_alive(pids: set[int]) -> bool:
    return not alive(pids)


def auth(c: Cluster) -> dict[str, str]:
    """The headers of an API call with the fabric's token."""
    return {"authorization": f"Bearer {read_token(c.state)}", "x-ms-version": "2014-06-01"}


def raw_request(url: str, method: str, path: str, token: str, body: bytes) -> socket.socket:
    """Send one HTTP request on a new connection and return the socket unread: the kernel
    queues it even while the server is stopped."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=60)
    head = (
        f"{method} {path} HTTP/1.1\r\nhost: {parts.netloc}\r\nauthorization: Bearer {token}\r\n"
        f"x-ms-version: 2014-06-01\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    sock.sendall(head.encode() + body)
    return sock


def read_status(sock: socket.socket) -> int:
    """The status code of the answer on ``sock`` (then closes it)."""
    with sock:
        data = b""
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                raise AssertionError(f"no answer: {data!r}")
            data += chunk
    return int(data.split(b" ", 2)[1])


async def test_leader_paused_past_its_lease_writes_nothing_and_follows(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    async with cluster(tmp_path, postgres) as c:
        old, new = await c.two()
        async with c.client(old) as client:
            started = await deploy_service(client, HELLO, None)
            path = f"{await client._slot(started.service, 'production')}?comp=status"
        await c.audit()
        os.kill(old.pid, signal.SIGSTOP)
        try:
            await c.leader(not_=old.name, seconds=LEASE + 30)
            # Writes reach the paused leader's socket; they are read once the process resumes.
            token = read_token(c.state) or ""
            sock = raw_request(old.url, "POST", path, token, b'{"Status": "Running"}')
            services = path.split("/hostedservices/")[0] + "/hostedservices"
            ghost = raw_request(old.url, "POST", services, token, b'{"ServiceName": "ghost"}')
            before = await c.writes_by(old.name)
            offset = len(old.output())
        finally:
            os.kill(old.pid, signal.SIGCONT)
        status = await anyio.to_thread.run_sync(read_status, sock)
        # Fenced (503), forwarded to the new leader (202), or refused by the new leader while it
        # resumes the deployment's work (409): never a write of its own (the audit below).
        assert status in (202, 409, 503), status
        # A hosted service it created is one the leader knows (forwarded: 201), or it was
        # refused (503): RDFE's records are fenced too, never acknowledged and lost.
        created = await anyio.to_thread.run_sync(read_status, ghost)
        async with c.client(new) as client:
            known = {h.service_name for h in await client.hosted_services(detail=False)}
        assert created in (201, 503) and (created == 201) == ("ghost" in known), (created, known)
        await c.wait_output(old, rf"replica {old.name} follows", after=offset)
        assert await c.writes_by(old.name) == before  # none once paused (some may land before)
        row = await c.lease()
        assert row is not None and row["holder"] == new.name and row["live"]
        async with c.client(old) as client:  # it forwards to the new leader now

            async def ready() -> bool:
                view = await client.deployment(started.service, "production")
                return [i.status for i in view.instances] == ["ReadyRole"]

            await eventually(ready, 60, "the deployment ReadyRole under the new leader")
        assert await c.writes_by(new.name) > 0  # the new leader did write (the audit works)


async def test_database_restarted_under_a_running_fabric(postgres: PostgresServer, tmp_path: Path) -> None:
    settings = tmp_path / "settings.toml"
    # a lease that outlives the restart (the fast profile's 2 s deadline would not)
    settings.write_text(
        "leader_lease_duration = 30.0\nleader_renew_interval = 1.0\nleader_renew_deadline = 20.0\n"
    )
    async with cluster(tmp_path, postgres, settings) as c:
        leader, _ = await c.two()
        epoch = (await c.lease() or {})["epoch"]
        async with c.client(leader) as client:
            started = await deploy_service(client, HELLO, None)

            async def ready() -> bool:
                view = await client.deployment(started.service, "production")
                return [i.status for i in view.instances] == ["ReadyRole"]

            await eventually(ready, 60, "ReadyRole")
            running = c.descendants(leader)
            acknowledged = await client.set_status(started.service, "production", "Running")
            assert (await client.wait(acknowledged)).status == "Succeeded"

            await anyio.to_thread.run_sync(postgres.stop_server)
            try:
                # the goal state cannot change: a write is refused (503, Retry-After), reads answer
                async with httpx.AsyncClient(base_url=leader.url, headers=auth(c), timeout=30) as raw:
                    path = await client._slot(started.service, "production")
                    answer = await raw.post(path, params={"comp": "status"}, json={"Status": "Running"})
                assert answer.status_code == 503 and int(answer.headers["retry-after"]) >= 1, answer.text
                view = await client.deployment(started.service, "production")
                assert [i.status for i in view.instances] == ["ReadyRole"]
            finally:
                await anyio.to_thread.run_sync(postgres.start_server)

            async def accepted() -> str | None:
                try:
                    return await client.set_status(started.service, "production", "Running")
                except ApiRefused as exc:
                    assert exc.status == 503, exc
                    return None

            after = await eventually(accepted, 30, "a write accepted once the database is back")
            assert (await client.wait(after)).status == "Succeeded"
            assert (await client.wait(acknowledged)).status == "Succeeded"  # not lost
            view = await client.deployment(started.service, "production")
            assert [(i.status, i.restarts) for i in view.instances] == [("ReadyRole", 0)]
        assert alive(running) == running  # no process of the fabric restarted
        row = await c.lease()
        assert row is not None and row["holder"] == leader.name and row["epoch"] == epoch


async def test_a_schema_from_the_future_is_refused(postgres: PostgresServer, tmp_path: Path) -> None:
    from fabric.controller.goal_store import open_goal_store

    url = postgres.create_database()
    await (await open_goal_store(url, tmp_path, "local")).aclose()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE fabric_schema SET version = 99")
    argv = [FABRIC, "serve", "--fast", "--store", url, "--replica", "a", "--state-dir", str(tmp_path / "s")]
    with anyio.fail_after(60):
        result = await anyio.run_process(argv, check=False, stderr=subprocess.PIPE)
    err = result.stderr.decode().strip()
    assert result.returncode == 2, err
    assert len(err.splitlines()) == 1 and "schema version 99" in err, err


async def test_a_leader_stopped_gracefully_lets_the_lease_go_and_leaves_the_replica_list(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    settings = tmp_path / "settings.toml"
    settings.write_text(
        "leader_lease_duration = 30.0\nleader_renew_interval = 1.0\nleader_renew_deadline = 20.0\n"
    )
    async with cluster(tmp_path, postgres, settings) as c:
        old, new = await c.two("--listen", "127.0.0.1:0")
        listed = await c.sql("SELECT name, host_port FROM fabric_replicas ORDER BY name")
        ports = {r["name"]: r["host_port"] for r in listed}
        assert set(ports) == {"a", "b"} and len(set(ports.values())) == 2, ports
        # The leader listens at the host port it listed; the follower holds the pair it listed.
        assert read_listen(c.state) == ports[old.name]
        for port in (int(ports[new.name].rpartition(":")[2]), int(ports[new.name].rpartition(":")[2]) + 1):
            assert port != 1
            with socket.socket() as sock, pytest.raises(OSError):
                sock.bind(("127.0.0.1", port))
        # Any replica answers the list from the database, host ports included.
        token = read_token(c.state)
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {token}"}) as http:
            view = (await http.get(new.url + "/replicas")).json()
        assert {r["Name"]: r["HostPort"] for r in view["Replicas"]} == ports

        # A replica not seen for long (a dead one: its row old, its lock file unlocked) is retired
        # by the leader, its files with it.
        await c.sql(
            "INSERT INTO fabric_replicas (name, api_url, host_port, seen_at) "
            "VALUES ('gone', 'http://127.0.0.9:1', '127.0.0.9:7443', now() - interval '1 day')"
        )
        ghost = c.state / "replica-gone.lock"
        ghost.write_text("1\n")

        async def retired() -> bool:
            rows = await c.sql("SELECT name FROM fabric_replicas WHERE name = 'gone'")
            return not rows and not ghost.exists()

        await eventually(retired, 30, "the unseen replica retired")
        assert (c.state / f"replica-{new.name}.lock").exists()  # a live one keeps its files

        stopped = anyio.current_time()
        await c.stop(old)  # SIGTERM: its fabric stops, then it releases the lease
        assert old.process.returncode == 0
        await c.leader(not_=old.name, seconds=15)
        # well before the 30 s lease could have expired
        assert anyio.current_time() - stopped < 15
        # It left the list and took its files; the new leader listens at the port it had listed.
        assert [r["name"] for r in await c.sql("SELECT name FROM fabric_replicas")] == [new.name]
        assert not (c.state / f"replica-{old.name}.lock").exists()
        assert read_listen(c.state) == ports[new.name]
