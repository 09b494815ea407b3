"""Static sites: default documents, content types, errors, and no way out of the folder."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import pytest


async def raw_get(port: int, target: str) -> bytes:
    """Send a request line exactly as written (clients would normalise `..` away)."""
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(request)
        chunks = []
        with anyio.fail_after(5):
            try:
                while True:
                    chunks.append(await stream.receive())
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
    return b"".join(chunks)


@pytest.fixture
def static_root(web, tmp_path: Path) -> Path:
    root = web.static_site(tmp_path / "sitesroot" / "0")
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    (root / "escape.txt").symlink_to(secret)
    (root / "escape-dir").symlink_to(tmp_path)
    (root / "alias.css").symlink_to(root / "style.css")
    (root / ".env").write_text("PASSWORD=1")
    (root / "empty").mkdir()
    return root


async def test_files_and_default_documents(web, listener, static_root: Path) -> None:
    async with (
        web.serving(web.one_site(static_root, listener)) as binds,
        web.client(binds["HttpIn"]) as http,
    ):
        home = await http.get("/")
        css = await http.get("/style.css")
        docs = await http.get("/docs/")
        blob = await http.get("/data.unknownext")
        head = await http.head("/style.css")
    assert (home.status_code, home.text) == (200, "<h1>home</h1>")
    assert home.headers["content-type"] == "text/html"
    assert (css.headers["content-type"], css.text) == ("text/css", "h1 { color: red }")
    assert css.headers["content-length"] == str(len("h1 { color: red }"))
    assert "last-modified" in css.headers
    assert docs.text == "<h1>docs</h1>"
    assert blob.headers["content-type"] == "application/octet-stream"
    assert blob.content == b"\x00\x01"
    assert (head.status_code, head.content) == (200, b"")
    assert head.headers["content-length"] == css.headers["content-length"]


async def test_errors_and_redirects(web, listener, static_root: Path) -> None:
    async with (
        web.serving(web.one_site(static_root, listener)) as binds,
        web.client(binds["HttpIn"]) as http,
    ):
        missing = await http.get("/nope.html")
        folder = await http.get("/docs", params={"a": "b"})
        listing = await http.get("/empty/")
        post = await http.post("/style.css", content=b"x")
        dotfile = await http.get("/.env")
        file_as_folder = await http.get("/style.css/")
    assert missing.status_code == 404
    assert (folder.status_code, folder.headers["location"]) == (301, "/docs/?a=b")
    assert listing.status_code == 403
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")
    assert dotfile.status_code == 404
    assert file_as_folder.status_code == 404


async def test_symlink_inside_the_folder_is_served(web, listener, static_root: Path) -> None:
    async with (
        web.serving(web.one_site(static_root, listener)) as binds,
        web.client(binds["HttpIn"]) as http,
    ):
        alias = await http.get("/alias.css")
    assert alias.text == "h1 { color: red }"


@pytest.mark.parametrize(
    "target",
    [
        "/../secret.txt",
        "/docs/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/docs/%2E%2E/%2e%2e/secret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/escape.txt",
        "/escape-dir/secret.txt",
        "/%00secret.txt",
    ],
)
async def test_no_path_leaves_the_site_folder(web, listener, static_root: Path, target) -> None:
    async with web.serving(web.one_site(static_root, listener)) as binds:
        port = int(binds["HttpIn"].rsplit(":", 1)[1])
        response = await raw_get(port, target)
    status_line = response.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 404"), status_line
    assert b"top secret" not in response


async def test_site_folder_may_itself_be_a_symlink(web, listener, tmp_path: Path) -> None:
    real = web.static_site(tmp_path / "approot")
    link = tmp_path / "sitesroot-0"
    os.symlink(real, link)
    async with web.serving(web.one_site(link, listener)) as binds, web.client(binds["HttpIn"]) as http:
        css = await http.get("/style.css")
    assert css.text == "h1 { color: red }"
