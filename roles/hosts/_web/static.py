"""Serve a folder's files over ASGI the way IIS's static file handler does."""

from __future__ import annotations

import email.utils
import mimetypes
import os
import stat
from html import escape
from pathlib import Path
from urllib.parse import quote

import anyio

from .types import Receive, Scope, Send

DEFAULT_DOCUMENTS = ("index.html", "index.htm", "default.htm", "default.html")
_CHUNK = 64 * 1024


class StaticFiles:
    """An ASGI app serving the files under `root`.

    GET and HEAD only (405 otherwise). A folder is served by its first default document
    (index.html, index.htm, default.htm, default.html); a folder URL without its final slash is
    redirected (301) to the slash form; a folder with no default document gives 403, as IIS does
    with directory browsing off. Paths that leave `root` (through `..`, a backslash or a symlink
    pointing outside) and names starting with a dot give 404.
    """

    def __init__(self, root: str | Path) -> None:
        """Serve the files under `root` (resolved once, so the root itself may be a symlink)."""
        self.root = Path(root).resolve()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one HTTP request with a file, a redirect or an error page."""
        if scope["type"] != "http":
            return
        method = scope["method"]
        if method not in {"GET", "HEAD"}:
            await send_error_page(send, 405, "Method Not Allowed", [(b"allow", b"GET, HEAD")])
            return
        relative = _relative_path(scope)
        target = None if relative is None else await self._resolve(relative)
        if relative is None or target is None:
            await send_error_page(send, 404, "Not Found")
            return
        info = await anyio.to_thread.run_sync(os.stat, target)
        if stat.S_ISDIR(info.st_mode):
            if not relative.endswith("/") and relative != "":
                await _redirect_to_folder(scope, send)
                return
            document = await self._default_document(target)
            if document is None:
                await send_error_page(send, 403, "Forbidden: directory browsing is not enabled")
                return
            target, info = document
        elif relative.endswith("/"):  # a file named like a folder, as IIS answers it
            await send_error_page(send, 404, "Not Found")
            return
        await _send_file(send, target, info, head=method == "HEAD")

    async def _resolve(self, relative: str) -> Path | None:
        segments = [segment for segment in relative.split("/") if segment]
        for segment in segments:
            # ".." and dot-files (.git, .env) are never served; a backslash is a separator on IIS.
            if segment.startswith(".") or "\\" in segment or "\0" in segment:
                return None
        candidate = self.root.joinpath(*segments)
        try:
            real = Path(await anyio.to_thread.run_sync(_realpath, candidate))
        except OSError:  # missing, or a symlink loop
            return None
        if real != self.root and not real.is_relative_to(self.root):
            return None
        return real

    async def _default_document(self, folder: Path) -> tuple[Path, os.stat_result] | None:
        for name in DEFAULT_DOCUMENTS:
            target = await self._resolve_in(folder, name)
            if target is not None:
                return target
        return None

    async def _resolve_in(self, folder: Path, name: str) -> tuple[Path, os.stat_result] | None:
        try:
            real = Path(await anyio.to_thread.run_sync(_realpath, folder / name))
            info = await anyio.to_thread.run_sync(os.stat, real)
        except OSError:
            return None
        if not real.is_relative_to(self.root) or not stat.S_ISREG(info.st_mode):
            return None
        return real, info


def _realpath(path: Path) -> str:
    return os.path.realpath(path, strict=True)


def _relative_path(scope: Scope) -> str | None:
    path: str = scope["path"]
    root_path: str = scope.get("root_path", "")
    if not path.startswith(root_path):
        return None
    return path[len(root_path) :].lstrip("/") if path != root_path else ""


def content_type(path: Path) -> str:
    """Return the Content-Type for a file name (application/octet-stream when unknown)."""
    guessed, encoding = mimetypes.guess_type(path.name, strict=False)
    if guessed is None or encoding is not None:  # a .gz file is sent as bytes, not as its inner type
        return "application/octet-stream"
    return guessed


async def _send_file(send: Send, path: Path, info: os.stat_result, *, head: bool) -> None:
    if not stat.S_ISREG(info.st_mode):
        await send_error_page(send, 404, "Not Found")
        return
    headers = [
        (b"content-type", content_type(path).encode("latin-1")),
        (b"content-length", str(info.st_size).encode("ascii")),
        (b"last-modified", email.utils.formatdate(info.st_mtime, usegmt=True).encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if head:
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return
    async with await anyio.open_file(path, "rb") as file:
        while chunk := await file.read(_CHUNK):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _redirect_to_folder(scope: Scope, send: Send) -> None:
    location = quote(scope["path"], safe="/:@!$&'()*+,;=~") + "/"
    if scope.get("query_string"):
        location += "?" + scope["query_string"].decode("latin-1")
    await send_error_page(send, 301, "Moved Permanently", [(b"location", location.encode("latin-1"))])


async def send_error_page(
    send: Send, status: int, title: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Send a complete small HTML error response with `status` and the message `title`."""
    body = f"<!DOCTYPE html><title>{status} {escape(title)}</title><h1>HTTP Error {status}</h1>"
    body += f"<p>{escape(title)}</p>\n"
    data = body.encode("utf-8")
    headers = [
        (b"content-type", b"text/html; charset=utf-8"),
        (b"content-length", str(len(data)).encode("ascii")),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data, "more_body": False})
