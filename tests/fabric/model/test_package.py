"""Building, reading and extracting .cspkg packages, and refusing hostile ones without a trace."""

from __future__ import annotations

import hashlib
import os
import stat
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest

from fabric.model import (
    ExtractLimits,
    Manifest,
    ManifestEntry,
    ModelError,
    PackageError,
    build_package,
    extract_package,
    load_service,
    read_package,
)

Entries = list[tuple[zipfile.ZipInfo, bytes]]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def package(shop: Path, tmp_path: Path) -> Path:
    out = tmp_path / "pkg" / "shop.cspkg"
    build_package(shop, out)
    return out


def test_package_round_trip(shop: Path, package: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(package) as zf:
        names = zf.namelist()
        manifest = msgspec.json.decode(zf.read("manifest.json"), type=Manifest)
        for entry in manifest.files:
            data = zf.read(entry.path)
            assert (len(data), hashlib.sha256(data).hexdigest()) == (entry.size, entry.sha256)
    assert names[-1] == "manifest.json" and "ServiceDefinition.csdef" in names
    assert "ServiceConfiguration.Local.cscfg" in names and "ServiceConfiguration.Cloud.cscfg" not in names
    assert {"roles/Worker/worker.py", "roles/WebFront/api/index.txt", "content/WebFront/1/index.html"} <= set(
        names
    )
    assert manifest.directories["WebFront"] == {
        "WebFront/api": "roles/WebFront/api",
        "admin_site": "content/WebFront/1",
        "assets": "content/WebFront/2",
    }
    in_zip = read_package(package)
    assert in_zip.packaged and in_zip.role_dirs["Worker"] == "roles/Worker"
    dest = extract_package(package, tmp_path / "out")
    extracted = load_service(dest)
    source = load_service(shop)
    assert extracted.definition == source.definition == in_zip.definition
    assert extracted.configuration == source.configuration
    assert (extracted.role_dir("Worker") / "setup.sh").stat().st_mode & 0o111  # still executable
    assert (extracted.content_dir("WebFront", "admin_site") / "index.html").read_text() == "<h1>admin</h1>\n"
    assert not any(".partial" in name for name in os.listdir(tmp_path))


def test_same_service_packs_to_the_same_bytes(shop: Path, package: Path, tmp_path: Path) -> None:
    (shop / "Worker" / "__pycache__").mkdir()
    (shop / "Worker" / "__pycache__" / "worker.cpython-311.pyc").write_bytes(b"\0")
    again = tmp_path / "again.cspkg"
    build_package(shop, again)
    assert again.read_bytes() == package.read_bytes()
    assert oct(again.stat().st_mode & 0o777) == "0o644"


def test_packing_with_another_configuration(shop: Path, tmp_path: Path) -> None:
    manifest = build_package(shop, tmp_path / "cloud.cspkg", shop / "ServiceConfiguration.Cloud.cscfg")
    assert manifest.configuration == "ServiceConfiguration.Cloud.cscfg"
    assert read_package(tmp_path / "cloud.cspkg").instances("Worker") == 6
    override = read_package(tmp_path / "cloud.cspkg", shop / "ServiceConfiguration.Local.cscfg")
    assert override.instances("Worker") == 3


def test_toml_service_packs_too(shop_toml: Path, tmp_path: Path) -> None:
    manifest = build_package(shop_toml, tmp_path / "t.cspkg")
    assert (manifest.definition, manifest.configuration) == ("service.toml", "config.local.toml")
    assert load_service(tmp_path / "t.cspkg").definition.name == "Shop"


def test_build_refuses_what_it_cannot_pack(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "x.cspkg"
    (shop / "Worker" / "link.py").symlink_to(shop / "Worker" / "worker.py")
    os.mkfifo(shop / "Worker" / "pipe")
    (shop / "Worker" / "WORKER.py").write_text("")
    with pytest.raises(PackageError) as info:
        build_package(shop, out)
    text = str(info.value)
    assert "link.py: is a symlink" in text and "pipe: is not a regular file" in text
    assert "differ only in case" in text
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_build_requires_role_code(shop: Path, tmp_path: Path) -> None:
    (shop / "WebFront" / "WebFront.py").unlink()
    with pytest.raises(ModelError, match=r"WebFront.py is not in .*; add the role's entry module there"):
        build_package(shop, tmp_path / "x.cspkg")


# --- hostile packages ---------------------------------------------------------------------


def _repack(src: Path, dst: Path, change: Callable[[Entries], Entries]) -> Path:
    with zipfile.ZipFile(src) as zf:
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    with warnings.catch_warnings(), zipfile.ZipFile(dst, "w") as out:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicates we add on purpose
        for info, data in change(entries):
            out.writestr(info, data)
    return dst


def _entry(
    name: str, data: bytes = b"evil", mode: int = stat.S_IFREG | 0o644
) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info, data


def _add(*extra: tuple[zipfile.ZipInfo, bytes]) -> Callable[[Entries], Entries]:
    return lambda entries: [*entries, *extra]


def _replace(name: str, data: bytes) -> Callable[[Entries], Entries]:
    return lambda entries: [(i, data if i.filename == name else d) for i, d in entries]


def _consistent(entries: Entries, name: str, data: bytes) -> Entries:
    """Replace a file and update the manifest to match, so only the model is wrong."""
    manifest = msgspec.json.decode(dict((i.filename, d) for i, d in entries)["manifest.json"], type=Manifest)
    entry = ManifestEntry(path=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    files = (*(f for f in manifest.files if f.path != name), entry)
    fixed = msgspec.json.encode(msgspec.structs.replace(manifest, files=files))
    return _replace("manifest.json", fixed)(_replace(name, data)(entries))


def _drop(name: str) -> Callable[[Entries], Entries]:
    return lambda entries: [(i, d) for i, d in entries if i.filename != name]


HOSTILE: list[tuple[str, Callable[[Entries], Entries], str]] = [
    ("absolute path", _add(_entry("/tmp/evil")), "is an absolute path"),
    ("windows drive", _add(_entry("C:/evil")), "is an absolute path"),
    ("dot-dot", _add(_entry("../evil")), "climbs out of the package"),
    ("nested dot-dot", _add(_entry("roles/Worker/../../../evil")), "climbs out of the package"),
    ("backslash", _add(_entry("..\\evil")), "contains a backslash"),
    ("dot component", _add(_entry("roles/./evil")), "has an empty or '.' path component"),
    ("symlink", _add(_entry("roles/Worker/evil", b"/etc/passwd", stat.S_IFLNK | 0o777)), "is a symlink"),
    (
        "character device",
        _add(_entry("roles/Worker/evil", b"", stat.S_IFCHR | 0o666)),
        "is a character device",
    ),
    ("block device", _add(_entry("roles/Worker/evil", b"", stat.S_IFBLK | 0o666)), "is a block device"),
    ("fifo", _add(_entry("roles/Worker/evil", b"", stat.S_IFIFO | 0o666)), "is a named pipe"),
    ("duplicate", _add(_entry("roles/Worker/worker.py")), "duplicates 'roles/Worker/worker.py'"),
    ("case duplicate", _add(_entry("roles/worker/worker.py")), "names differ only in case"),
    ("file and folder", _add(_entry("roles/Worker/worker.py/evil")), "is both a file and a folder"),
    ("ratio bomb", _add(_entry("roles/Worker/zeros", bytes(8 * 1024 * 1024))), "refusing a zip bomb"),
    (
        "content changed",
        _replace("roles/Worker/worker.py", b"print('pwnd')"),
        "entry 'roles/Worker/worker.py' is 13 bytes; the manifest says 14",
    ),
    (
        "same size, other bytes",
        _replace("roles/Worker/worker.py", b"print('WORK')\n"),
        "does not match its SHA-256",
    ),
    (
        "unlisted file",
        _add(_entry("roles/Worker/extra.py")),
        "'roles/Worker/extra.py' is not listed in the manifest",
    ),
    (
        "listed file missing",
        _drop("roles/Worker/worker.py"),
        "manifest lists 'roles/Worker/worker.py', which the package does not hold",
    ),
    ("no manifest", _drop("manifest.json"), "has no manifest.json"),
    ("manifest not JSON", _replace("manifest.json", b"{not json"), "manifest is not valid JSON"),
    ("manifest wrong shape", _replace("manifest.json", b'{"files": 3}'), "manifest is invalid"),
    (
        "manifest unsafe path",
        _replace("manifest.json", b'{"service":"S","definition":"../x","configuration":"c"}'),
        "manifest names an unsafe path '../x'",
    ),
    (
        "invalid model inside",
        lambda e: _consistent(e, "ServiceConfiguration.Local.cscfg", b"<ServiceConfiguration/>"),
        "has no namespace",
    ),
]


@pytest.mark.parametrize(("case", "change", "message"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_package_is_refused_and_nothing_is_written(
    package: Path, tmp_path: Path, case: str, change: Callable[[Entries], Entries], message: str
) -> None:
    bad = _repack(package, tmp_path / "pkg" / "bad.cspkg", change)
    work = tmp_path / "work"
    work.mkdir()
    before, outside = _tree(tmp_path), set(os.listdir(tmp_path.parent))
    with pytest.raises(ModelError) as info:
        extract_package(bad, work / "out")
    assert message in str(info.value), str(info.value)
    with pytest.raises(ModelError):
        read_package(bad)
    assert _tree(tmp_path) == before  # no target, no partial folder, no stray file
    assert set(os.listdir(tmp_path.parent)) == outside
    assert not Path("/tmp/evil").exists()


def test_size_bomb_is_refused_by_the_limit(package: Path, tmp_path: Path) -> None:
    limits = ExtractLimits(max_total_bytes=64 * 1024)
    bad = _repack(package, tmp_path / "big.cspkg", _add(_entry("roles/Worker/big", os.urandom(100 * 1024))))
    with pytest.raises(PackageError, match=r"expands to \d+ bytes; the limit is 65536"):
        extract_package(bad, tmp_path / "out", limits=limits)
    too_many = ExtractLimits(max_files=5)
    with pytest.raises(PackageError, match="entries; the limit is 5"):
        read_package(package, limits=too_many)
    assert not (tmp_path / "out").exists()


def test_an_entry_that_lies_about_its_size_is_corrupt(package: Path, tmp_path: Path) -> None:
    name, zeros = "roles/Worker/zeros.bin", bytes(200_000)

    def add_lying(entries: Entries) -> Entries:
        entries = _consistent([*entries, _entry(name, zeros)], name, zeros[:10])
        return [(i, zeros if i.filename == name else d) for i, d in entries]

    liar = bytearray(_repack(package, tmp_path / "liar.cspkg", add_lying).read_bytes())
    encoded = name.encode()
    # Declare 10 bytes in both the local header and the central directory, as a bomb would.
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = 0
        while (at := liar.find(signature, at)) != -1:
            name_at = at + (30 if signature == b"PK\x03\x04" else 46)
            if liar[name_at : name_at + len(encoded)] == encoded:
                liar[at + offset : at + offset + 4] = (10).to_bytes(4, "little")
            at += 4
    (tmp_path / "liar.cspkg").write_bytes(bytes(liar))
    with pytest.raises(PackageError, match=r"entry .roles/Worker/zeros.bin. is corrupt: Bad CRC-32"):
        extract_package(tmp_path / "liar.cspkg", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_flipped_bytes_are_corrupt(package: Path, tmp_path: Path) -> None:
    data = bytearray(package.read_bytes())
    with zipfile.ZipFile(package) as zf:
        info = zf.getinfo("roles/WebFront/WebFront.py")
    data[info.header_offset + 30 + len(info.filename) + 2] ^= 0xFF  # inside the compressed data
    flipped = tmp_path / "flipped.cspkg"
    flipped.write_bytes(bytes(data))
    with pytest.raises(PackageError, match=r"corrupt|does not match"):
        extract_package(flipped, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not really a zip", os.urandom(2048)])
def test_corrupt_archive_is_refused(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.cspkg"
    bad.write_bytes(content)
    with pytest.raises(PackageError, match="is not a valid package"):
        extract_package(bad, tmp_path / "out")
    with pytest.raises(PackageError):
        load_service(bad)


def test_truncated_archive_is_refused(package: Path, tmp_path: Path) -> None:
    bad = tmp_path / "cut.cspkg"
    bad.write_bytes(package.read_bytes()[: package.stat().st_size // 2])
    with pytest.raises(PackageError, match="is not a valid package"):
        read_package(bad)


def test_extract_refuses_an_existing_target(package: Path, tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(PackageError, match="already exists"):
        extract_package(package, tmp_path / "out")
    assert _tree(tmp_path / "out") == {"keep.txt"}
    with pytest.raises(PackageError, match="is a directory"):
        read_package(tmp_path / "out")
    with pytest.raises(PackageError, match="does not exist"):
        extract_package(tmp_path / "missing.cspkg", tmp_path / "new")
