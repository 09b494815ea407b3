"""Serve a folder's files over ASGI the way IIS's static file handler does."""

from __future__ import annotations

import email.utils
import mimetypes
import os
import stat
from enum import Enum
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
        # One thread hop for every file system look-up a request needs (and a small file's bytes).
        found = (
            _Answer.NOT_FOUND if relative is None else await anyio.to_thread.run_sync(self.lookup, relative)
        )
        if found is _Answer.NOT_FOUND:
            await send_error_page(send, 404, "Not Found")
        elif found is _Answer.REDIRECT:
            await _redirect_to_folder(scope, send)
        elif found is _Answer.NO_DEFAULT_DOCUMENT:
            await send_error_page(send, 403, "Forbidden: directory browsing is not enabled")
        else:
            await _send_file(send, found, head=method == "HEAD")

    def lookup(self, relative: str) -> _File | _Answer:
        """Return the file to send for a path relative to the root, or the answer instead.

        Blocking: runs in a worker thread.
        """
        target = self._resolve(self.root, relative)
        if target is None:
            return _Answer.NOT_FOUND
        real, info = target
        if stat.S_ISDIR(info.st_mode):
            if relative and not relative.endswith("/"):
                return _Answer.REDIRECT
            for name in DEFAULT_DOCUMENTS:
                document = self._resolve(real, name)
                if document is not None and stat.S_ISREG(document[1].st_mode):
                    return _File.read(*document)
            return _Answer.NO_DEFAULT_DOCUMENT
        if relative.endswith("/") or not stat.S_ISREG(info.st_mode):
            return _Answer.NOT_FOUND  # a file asked for as a folder, or a device/socket/fifo
        return _File.read(real, info)

    def _resolve(self, base: Path, relative: str) -> tuple[Path, os.stat_result] | None:
        segments = [segment for segment in relative.split("/") if segment]
        for segment in segments:
            # ".." and dot-files (.git, .env) are never served; a backslash is a separator on IIS.
            if segment.startswith(".") or "\\" in segment or "\0" in segment:
                return None
        try:
            real = Path(os.path.realpath(base.joinpath(*segments), strict=True))
            info = real.stat()
        except OSError:  # missing, unreadable, or a symlink loop
            return None
        if real != self.root and not real.is_relative_to(self.root):
            return None  # a symlink pointing outside the site folder
        return real, info


class _File:
    """A file to send: its stat, and its bytes when small enough to read at once."""

    def __init__(self, path: Path, info: os.stat_result, data: bytes | None) -> None:
        self.path = path
        self.info = info
        self.data = data

    @classmethod
    def read(cls, path: Path, info: os.stat_result) -> _File:
        data = path.read_bytes() if info.st_size <= _CHUNK else None
        return cls(path, info, data)


class _Answer(Enum):
    """A look-up that ends in something other than a file."""

    NOT_FOUND = 404
    REDIRECT = 301
    NO_DEFAULT_DOCUMENT = 403


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


async def _send_file(send: Send, file: _File, *, head: bool) -> None:
    size = len(file.data) if file.data is not None else file.info.st_size
    headers = [
        (b"content-type", content_type(file.path).encode("latin-1")),
        (b"content-length", str(size).encode("ascii")),
        (b"last-modified", email.utils.formatdate(file.info.st_mtime, usegmt=True).encode("ascii")),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if head or file.data is not None:
        body = b"" if head or file.data is None else file.data
        await send({"type": "http.response.body", "body": body, "more_body": False})
        return
    async with await anyio.open_file(file.path, "rb") as stream:
        remaining = size  # a file growing meanwhile must not overrun its Content-Length
        while remaining > 0 and (chunk := await stream.read(min(_CHUNK, remaining))):
            remaining -= len(chunk)
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
