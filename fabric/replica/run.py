"""One controller replica's life: serve the API, campaign, lead a term, follow, again.

``fabric serve --store postgresql://... --replica NAME`` runs :func:`serve_replica`. Replicas of
one fabric share its state folder (the API token, packages, certificates: one machine, or a
folder every replica mounts) and its database (the goal state, RDFE's records of subscriptions
and hosted services, the lease, the replica table, the views followers read).
Each holds ``replica-NAME.lock`` in the folder for its life, and a shared lock on
``fabric.lock`` (so a plain ``fabric serve`` cannot run there meanwhile).

While it leads, a replica runs the whole fabric (controller, FFE, load balancers;
``fabric.server.open_fabric``) with every write fenced by its lease; when the term ends (the
lease not renewed in time, taken over, or a write fenced) the fabric is stopped, and the
replica follows again, forwarding requests to whoever leads. Local hosts are not a term's: the
leader starts them detached on its machine and they follow whoever leads, as joined hosts do
(fabric.replica.local_hosts); the last replica of the folder to stop stops them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.abc
import anyio.to_thread

from actors import Ref
from fabric.client.tls import ca_context
from fabric.controller.leader import Elector
from fabric.controller.pg_store import Database, StoreUnavailable, migrate, redact
from fabric.controller.shared_folder import guarded
from fabric.frontend.api_tls import server_context, wants_tls
from fabric.frontend.auth import clear_api_url, new_token, read_token, write_api_url, write_token
from fabric.host.messages import HostConfig
from fabric.replica import local_hosts
from fabric.replica.addresses import (
    address_of,
    host_port,
    host_ports,
    register_interval,
    remove_files,
    reserve_pair,
    sweep,
)
from fabric.replica.balancer import serve_standby
from fabric.replica.front import ReplicaFront
from fabric.replica.records import open_records
from fabric.replica.registry import register, unregister
from fabric.replica.views import publish
from fabric.server import FabricBusy, ReplicaTerm, open_fabric, stop_budget
from fabric.settings import Settings
from roles.hosts.http import asgi_handler, serve_http, server_config, socket_url
from roles.hosts.http_bounded import ConnectionGate, default_limit

log = logging.getLogger("fabric.replica")

#: a leader writes what its API shows (fabric.replica.views) at most this often
VIEWS_INTERVAL = 1.0
#: a replica name: it names a lock file and a row, and appears in logs
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def lock_replica(state_dir: Path, name: str) -> tuple[Path, list[int]]:
    """Take the state folder for replica ``name``; returns the folder and the locks' fds.

    Raises:
        FabricBusy: a plain ``fabric serve`` runs there, or a replica of this name does.
    """
    state_dir = state_dir.absolute()
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)  # it holds the API token
    fds: list[int] = []
    try:
        shared = os.open(state_dir / "fabric.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fds.append(shared)
        try:
            fcntl.flock(shared, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FabricBusy(
                f"a fabric that is not a replica is running for state folder {state_dir}"
            ) from None
        own = os.open(state_dir / f"replica-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        fds.append(own)
        try:
            fcntl.flock(own, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FabricBusy(f"replica {name} is already running for state folder {state_dir}") from None
        os.ftruncate(own, 0)
        os.write(own, f"{os.getpid()}\n".encode())  # its API URL follows once it listens
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return state_dir, fds


async def first_of(*waits: Callable[[], Awaitable[object]]) -> None:
    """Return when the first of ``waits`` returns (the others are cancelled)."""
    async with anyio.create_task_group() as tg:

        async def wait(fn: Callable[[], Awaitable[object]]) -> None:
            await fn()
            tg.cancel_scope.cancel()

        for fn in waits:
            tg.start_soon(wait, fn)


def shared_token(state_dir: Path) -> str:
    """The API token every replica of the folder serves (made by the first one to start)."""
    fd = os.open(state_dir / "token.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two replicas starting at once make one token
        token = read_token(state_dir)
        if token is None:
            token = new_token()
            write_token(state_dir, token)
        return token
    finally:
        os.close(fd)


def with_application_name(url: str, name: str) -> str:
    """The URL with ``application_name=fabric-replica-NAME`` (unless it names one): the
    database's own views (pg_stat_activity, logs) say which replica a session is."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    if any(k == "application_name" for k, _ in query):
        return url
    query.append(("application_name", f"fabric-replica-{name}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


async def serve_replica(
    state_dir: Path,
    settings: Settings,
    store_url: str,
    name: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    listen: tuple[str, int] | None = None,
    https: bool = False,
    on_change: Callable[[str], None] = lambda line: None,
    stop: anyio.Event | None = None,
    task_status: anyio.abc.TaskStatus[str] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run replica ``name`` until ``stop`` is set (then a leader stops its fabric gracefully and
    lets the lease go) or it is cancelled; reports its API URL once it answers. Its API serves
    HTTPS (a certificate from the cluster CA) with ``https`` or when ``host`` is not loopback.

    Raises:
        FabricBusy: the folder is taken (see lock_replica).
        StoreError: the database cannot be reached at start, or holds a newer schema.
    """
    state_dir, locks = lock_replica(state_dir, name)
    store_url = with_application_name(store_url, name)
    # the host port local hosts link to (they follow whoever leads): on loopback when not given
    listen = listen or ("127.0.0.1", 0)
    try:
        token = await anyio.to_thread.run_sync(shared_token, state_dir)
        await anyio.to_thread.run_sync(local_hosts.open_ca, state_dir)  # made once, before any term
        db = Database(store_url, max_connections=4, name=f"replica-{name}")
        await db.open()
        try:
            await db.run(migrate, write=True)
            await _serve(
                state_dir,
                settings,
                store_url,
                name,
                token,
                db,
                (host, port),
                listen,
                wants_tls(host, https),
                on_change,
                stop or anyio.Event(),
                task_status,
            )
        finally:
            await db.aclose()
        if await anyio.to_thread.run_sync(local_hosts.last_out, locks[0]):
            # No replica is left to lead: the local hosts would wait for one for ever.
            with anyio.CancelScope(shield=True):
                budget = stop_budget(settings) + 10.0
                for line in await anyio.to_thread.run_sync(local_hosts.stop_all, state_dir, budget):
                    on_change(line)
    finally:
        for fd in locks:
            os.close(fd)


async def _serve(
    state_dir: Path,
    settings: Settings,
    store_url: str,
    name: str,
    token: str,
    db: Database,
    address: tuple[str, int],
    listen: tuple[str, int] | None,
    tls: bool,
    on_change: Callable[[str], None],
    stop: anyio.Event,
    task_status: anyio.abc.TaskStatus[str],
) -> None:
    elector = Elector.from_settings(db, name, settings)
    front = ReplicaFront(
        name,
        token,
        db,
        lambda: elector.is_leader,
        refresh_interval=settings.leader_renew_interval,
        retry_after=max(1, round(settings.leader_renew_interval)),
        verify=ca_context(state_dir / "cluster" / "ca.pem"),  # a leader's https: the cluster CA
    )
    config = server_config(graceful_timeout=2.0)
    context = await anyio.to_thread.run_sync(server_context, state_dir, address[0]) if tls else None
    reserved: list[socket.socket] = []
    if listen is not None and listen[1] == 0:  # the pair it will listen on when it leads, held
        port, reserved = await anyio.to_thread.run_sync(reserve_pair, listen[0])
        listen = (listen[0], port)
    own_port = host_port(*listen) if listen is not None else ""
    with socket.create_server(address, backlog=config.backlog) as sock, contextlib.ExitStack() as held:
        for kept in reserved:
            held.enter_context(kept)
        url = socket_url(sock, "https" if tls else "http")
        while True:  # the hosts learn every replica's host port from the leader, which reads it here
            try:
                await register(db, name, url, own_port)
                break
            except StoreUnavailable as exc:
                log.warning("%s: waiting for the database to register: %s", name, exc)
                await anyio.sleep(settings.leader_renew_interval)
        own = state_dir / f"replica-{name}.lock"
        # for fabric chaos replica, and its host port for the local hosts (fabric.replica.local_hosts)
        await anyio.Path(own).write_text(f"{os.getpid()}\n{url}\n{own_port}\n")
        async with anyio.create_task_group() as tg:
            # on the network with --listen: a flood of connections is bounded (roles.hosts.http_bounded)
            gate = ConnectionGate(default_limit(), f"replica {name}'s API at {url}")
            await tg.start(
                partial(serve_http, asgi_handler(front), sock, config, ssl_context=context, gate=gate)
            )
            tg.start_soon(front.watch)
            tg.start_soon(_keep_registered, db, name, url, own_port, settings)
            # every endpoint the leader shows, served here too: the site answers while nobody leads
            every = max(VIEWS_INTERVAL, settings.leader_renew_interval)
            await tg.start(serve_standby, db, lambda: elector.is_leader, every, on_change)
            await tg.start(elector.run)
            write_api_url(state_dir, url)
            on_change(f"replica {name} serving {url} (database {redact(store_url)}); following")
            task_status.started(url)
            try:
                while not stop.is_set():
                    await first_of(elector.wait_leading, stop.wait)
                    term = elector.term
                    if term is None or stop.is_set():
                        continue
                    front.leader_changed()
                    write_api_url(state_dir, url)  # a client of the folder finds the leader first
                    on_change(f"replica {name} leads (epoch {term.epoch}); taking over")
                    replica = ReplicaTerm(
                        url=url,
                        token=token,
                        fence=elector.fence,
                        on_fenced=elector.resign,
                        mount=front.mount,
                        records=partial(open_records, db, elector.fence, elector.resign),
                        host_ports=partial(host_ports, db),
                        launch_host=partial(_launch_local, state_dir, settings, db, own_port),
                    )
                    try:
                        async with (
                            _guarded(elector),
                            open_fabric(
                                state_dir, settings, store_url=store_url, listen=listen, replica=replica
                            ) as fabric,
                            anyio.create_task_group() as views,
                        ):
                            # what the API shows, for the followers to answer reads from
                            every = max(VIEWS_INTERVAL, settings.leader_renew_interval)
                            views.start_soon(
                                publish,
                                db,
                                fabric.ffe,
                                lambda: front.app,
                                elector.fence,
                                elector.resign,
                                every,
                            )
                            views.start_soon(
                                sweep, db, state_dir, settings, elector.fence, elector.resign, on_change
                            )
                            on_change(f"replica {name} acting as leader (epoch {term.epoch})")

                            async def controller_ended(controller: Ref = fabric.controller) -> None:
                                # A leader whose controller crashed would hold the lease and
                                # answer 503 for ever: let another replica (or a new term) lead.
                                error = await controller.join()
                                elector.resign(f"its controller ended ({type(error).__name__}: {error})")

                            await first_of(term.ended.wait, stop.wait, controller_ended)
                            views.cancel_scope.cancel()
                            why = term.lost or "asked to stop"
                            on_change(f"replica {name} stops leading: {why}; stopping its controller")
                    except Exception as exc:  # a takeover that failed: let another replica try
                        log.exception("replica %s could not lead", name)
                        elector.resign(f"the fabric did not start: {type(exc).__name__}: {exc}")
                    front.leader_changed()
                    on_change(f"replica {name} follows")
                await _retire(db, state_dir, name, own_port, on_change)
            finally:
                clear_api_url(state_dir, url)
                tg.cancel_scope.cancel()


async def _launch_local(
    state_dir: Path, settings: Settings, db: Database, own: str, config: HostConfig
) -> None:
    """Start a local host detached on this machine, linking to this replica's host port first,
    then to the others listed (it follows whoever leads)."""
    listed = await host_ports(db) or []
    controllers = [own] + [p for p in listed if p != own]
    lifetime = settings.host_certificate_lifetime
    await local_hosts.start(state_dir, config, address_of(own), controllers[:16], lifetime)


async def _keep_registered(db: Database, name: str, url: str, own_port: str, settings: Settings) -> None:
    """Say this replica is still there every register_interval (back on the list if retired)."""
    while True:
        await anyio.sleep(register_interval(settings))
        try:
            await register(db, name, url, own_port)
        except StoreUnavailable as exc:
            log.debug("%s: cannot register now: %s", name, exc)


async def _retire(
    db: Database, state_dir: Path, name: str, own_port: str, on_change: Callable[[str], None]
) -> None:
    """A replica stopping: off the list, and its files out of the state folder."""
    with anyio.move_on_after(5.0, shield=True):
        try:
            await unregister(db, name)
        except StoreUnavailable as exc:  # the leader retires it once it has not been seen long enough
            log.warning("%s: could not leave the replica list: %s", name, exc)
        others = await host_ports(db)
        await anyio.to_thread.run_sync(
            partial(
                remove_files, state_dir, name, own_port, [own_port] if others is None else others, own=True
            )
        )
        on_change(f"replica {name} left the replica list")


@contextlib.asynccontextmanager
async def _guarded(elector: Elector) -> AsyncIterator[None]:
    """The term's writes to the shared folder need the term to last (fabric.controller.shared_folder)."""
    with guarded(elector.acting):
        yield
