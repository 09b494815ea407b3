"""A VM's account may write where some of its logs are (its LocalStorage, its W3SVC folder): a
symbolic link (or a FIFO) it plants there named like a log is never listed nor read by root,
who would otherwise hand `fabric logs` and the portal any file of the machine (the CA's key,
/etc/shadow) through it."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, cast

import anyio
import httpx
import pytest

from fabric.frontend.rdfe import Rdfe
from fabric.guest.log_files import read_log, vm_logs
from roles.hosts.http import asgi_handler, serve_http, server_config

pytestmark = [pytest.mark.timeout(60)]

TOKEN = "the-token"
VM = "shop.d1.Web_IN_0"


def plant(state: Path) -> tuple[Path, Path]:
    """A VM whose LocalStorage holds a real log, a link to a secret and a FIFO; (vm, storage)."""
    secret = state / "cluster" / "ca.key"
    secret.parent.mkdir(parents=True)
    secret.write_text("THE CA KEY\n")
    vm = state / "vms" / VM
    storage = vm / "C" / "Resources" / "Directory" / "d1.Web.Data"
    storage.mkdir(parents=True)
    (storage / "mine.log").write_text("a line of my own\n")
    (storage / "evil.log").symlink_to(secret)
    os.mkfifo(storage / "stuck.log")
    return vm, storage


def test_links_and_fifos_are_not_logs_are_not_logs(tmp_path: Path) -> None:
    vm, storage = plant(tmp_path)
    assert sorted(vm_logs(vm)) == ["mine"]
    assert read_log(storage / "mine.log", 2, 4) == (b"line", 17)
    # a log swapped for a link after it was listed is not read through it
    (storage / "mine.log").unlink()
    (storage / "mine.log").symlink_to(tmp_path / "cluster" / "ca.key")
    with pytest.raises(OSError):
        read_log(storage / "mine.log", 0, 100)
    with pytest.raises(OSError):  # nor is a FIFO waited on
        read_log(storage / "stuck.log", 0, 100)


async def test_the_portal_streams_no_log_through_a_link(tmp_path: Path) -> None:
    plant(tmp_path)
    rdfe = Rdfe(cast(Any, None), tmp_path, TOKEN)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        async with anyio.create_task_group() as tg:
            url = await tg.start(serve_http, asgi_handler(rdfe), sock, server_config(graceful_timeout=1))
            headers = {"authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=10) as client:
                for name in ("evil", "stuck"):
                    with anyio.fail_after(10):
                        async with client.stream("GET", f"/portal/logs/stream?vm={VM}&file={name}") as answer:
                            first = await anext(answer.aiter_text())
                    assert answer.status_code == 404 and "THE CA KEY" not in first, first
                    assert "it has: mine" in first
            tg.cancel_scope.cancel()
