"""A joined host's packages and paths: a package is packed the same way every time (one digest),
arrives in order or not at all, unpacks only files and folders under code/ and sites/, and a
GuestConfig is re-rooted under the host's own folder, refusing any path that would leave it; the
controller asks a host for a package once, not once per instance."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
from pathlib import Path
from typing import Any, cast

import anyio
import msgspec
import pytest

from actors import Actor, open_system
from fabric.controller.hosts import HostPool
from fabric.guest.instance import build_guest_config
from fabric.guest.messages import GuestConfig
from fabric.host.messages import HasPackage, HostHeartbeat, PackageChunk, StartGuest
from fabric.host.packages import PackageCache, PackageError, PackageMissing, pack, reroot
from fabric.model.service import load_service
from fabric.settings import Settings
from tests.paths import EXAMPLES, ROOT

CLUSTER_SERVICES = ROOT / "tests" / "fabric" / "cluster" / "services"


def test_packing_is_deterministic_and_shipping_checked(tmp_path: Path) -> None:
    code = tmp_path / "code"
    (code / "sub").mkdir(parents=True)
    (code / "role.py").write_text("print('hi')\n")
    (code / "sub" / "data.txt").write_text("x" * 10_000)
    first, tar = pack(str(code), {}, tmp_path / "cache")
    (code / "role.py").touch()  # a new mtime: the same package
    assert pack(str(code), {}, tmp_path / "cache")[0] == first
    data = tar.read_bytes()
    cache = PackageCache(tmp_path / "host", max_bytes=1 << 20)
    with pytest.raises(PackageError, match="out of order"):
        cache.receive(first, 100, len(data), data[100:200])
    held = 0
    for start in range(0, len(data), 4096):
        held = cache.receive(first, start, len(data), data[start : start + 4096])
    assert held == len(data) and cache.has(first)
    assert (cache.path(first) / "code" / "sub" / "data.txt").read_text() == "x" * 10_000
    wrong = "0" * 64
    with pytest.raises(PackageError, match="another digest"):
        cache.receive(wrong, 0, len(data), data)
    assert not cache.has(wrong)
    with pytest.raises(PackageError, match="not a package digest"):
        cache.has("../../etc")
    with pytest.raises(PackageError, match="refused"):
        cache.receive("1" * 64, 0, 2 << 20, b"x")


def _tar(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.type, info.linkname = kind, link
        tar.addfile(info, io.BytesIO(b""))
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("name", "kind", "link"),
    [
        ("../escape", tarfile.REGTYPE, ""),
        ("/etc/passwd", tarfile.REGTYPE, ""),
        ("code/../../escape", tarfile.REGTYPE, ""),
        ("other/file", tarfile.REGTYPE, ""),
        ("code/link", tarfile.SYMTYPE, "/etc/passwd"),
        ("code/dev", tarfile.CHRTYPE, ""),
    ],
)
def test_a_hostile_package_is_refused(tmp_path: Path, name: str, kind: bytes, link: str) -> None:
    data = _tar(name, kind, link)
    digest = hashlib.sha256(data).hexdigest()
    cache = PackageCache(tmp_path / "host", max_bytes=1 << 20)
    with pytest.raises(PackageError):
        cache.receive(digest, 0, len(data), data)
    assert not cache.has(digest)
    assert not (tmp_path / "escape").exists()


def test_reroot_moves_every_path_and_refuses_escapes(tmp_path: Path) -> None:
    service = load_service(EXAMPLES / "guestbook")
    config = build_guest_config(
        service,
        "Web",
        0,
        deployment_id="d1",
        state_dir=Path("/controller/state"),
        ports={"HttpIn": 20001},
        topology={},
        settings=Settings.fast(),
        vm="svc.dep.Web_IN_0",
    )
    host, package = tmp_path / "host", tmp_path / "host" / "packages" / ("a" * 64)
    local = reroot(config, host, package)
    assert local.vm_root == str(host / "vms" / "svc.dep.Web_IN_0")
    assert local.role_code_dir == str(package / "code")
    assert local.state_dir == str(host)
    paths = [r.root_path for r in local.environment.local_resources.values()]
    paths += [c.path for c in local.environment.certificates.values()]
    assert paths and all(p.startswith(local.vm_root + "/") for p in paths), paths
    text = msgspec.json.encode(local).decode()
    assert "/controller/state" not in text
    scratch = next(iter(config.environment.local_resources))
    for bad in ("/etc", config.vm_root + "/../../etc"):
        env = config.environment
        hostile = msgspec.structs.replace(
            config,
            environment=msgspec.structs.replace(
                env,
                local_resources={
                    scratch: msgspec.structs.replace(env.local_resources[scratch], root_path=bad)
                },
            ),
        )
        with pytest.raises(PackageError):
            reroot(hostile, host, package)
    for instance in ("..", "../x", "a/b"):
        with pytest.raises(PackageError):
            reroot(msgspec.structs.replace(config, instance_id=instance), host, package)
    with pytest.raises(PackageError, match="guest agent"):
        reroot(msgspec.structs.replace(config, agent="os:system"), host, package)


def test_old_packages_no_vm_uses_are_pruned(tmp_path: Path) -> None:
    cache = PackageCache(tmp_path / "host", max_bytes=1 << 20)
    digests = [f"{n:064x}" for n in range(12)]
    for age, digest in enumerate(digests):
        folder = cache.path(digest)
        folder.mkdir(parents=True)
        os.utime(folder, (time.time() - 3600 - age, time.time() - 3600 - age))
    used = digests[-1]  # the oldest, but a VM runs from it
    removed = cache.prune({used}, newest=8, older_than=600)
    assert sorted(removed) == sorted(digests[8:11])
    assert all(cache.has(d) for d in [*digests[:8], used])
    fresh = f"{99:064x}"
    cache.path(fresh).mkdir()
    assert fresh not in cache.prune(set(), newest=0, older_than=600)  # it may be about to boot


class _Agent(Actor):
    """Stands in for a joined host's agent: holds packages as a PackageCache does, starts nothing."""

    def __init__(self, cache: PackageCache) -> None:
        self.cache = cache
        self.asked = 0
        self.started: list[str] = []

    async def receive(self, message: Any) -> Any:
        match message:
            case HasPackage(digest=digest):
                self.asked += 1
                return self.cache.has(digest)
            case PackageChunk(digest=digest, offset=offset, total=total, data=data):
                return self.cache.receive(digest, offset, total, data)
            case StartGuest(config=config, package=package):
                if not self.cache.has(package):
                    raise PackageMissing(f"package {package[:12]} is not here")
                self.started.append(config.instance_id)
                return 1
        return None


async def test_a_joined_host_is_asked_for_a_package_once_and_sent_it_again_when_pruned(
    tmp_path: Path,
) -> None:
    """A deploy of many instances to a joined host costs one HasPackage round trip, not one per
    instance; a package the host pruned since is shipped again on the start it refuses, and a
    host heard as a new incarnation is asked again."""
    service = load_service(CLUSTER_SERVICES / "spread")
    settings = Settings.fast()

    def config(n: int) -> GuestConfig:
        return build_guest_config(
            service, "Worker", n, deployment_id="d1", state_dir=tmp_path / "controller",
            ports={}, topology={}, settings=settings, vm=f"spread.d1.Worker_IN_{n}",
        )  # fmt: skip

    async def nothing(_: list[Any]) -> None:
        return None

    async with open_system() as system:
        cache = PackageCache(tmp_path / "host", max_bytes=1 << 20)
        agent = _Agent(cache)
        ref = await system.spawn(lambda: agent, name="agent")
        pool = HostPool(cast(Actor, None), cast(Any, None), settings, tmp_path / "controller", nothing)
        beat = HostHeartbeat(host_id="h1", instances={}, address="127.0.0.2", cores=4, boot="one")
        pool.heard_joined(beat, ref)
        async with anyio.create_task_group() as tg:
            for n in range(4):
                tg.start_soon(pool.ask, "h1", StartGuest(config(n)), 30.0)
        assert sorted(agent.started) == [f"spread.d1.Worker_IN_{n}" for n in range(4)]
        assert agent.asked == 1  # one round trip for the four (it was one per instance)
        (digest,) = [p.name for p in cache.folder.iterdir()]
        assert cache.prune(set(), newest=0, older_than=-1.0) == [digest]  # no VM used it
        await pool.ask("h1", StartGuest(config(4)), 30.0)
        assert agent.started[-1] == "spread.d1.Worker_IN_4" and cache.has(digest)  # shipped again
        pool.heard_joined(msgspec.structs.replace(beat, boot="two"), ref)  # its agent restarted
        await pool.ask("h1", StartGuest(config(5)), 30.0)
        assert agent.asked == 3 and len(agent.started) == 6
