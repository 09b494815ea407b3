"""Reading user files safely: size caps, clear errors for directories, encodings and BOMs."""

from __future__ import annotations

import codecs
from pathlib import Path

from fabric.model.errors import ModelError

MAX_MODEL_BYTES = 8 * 1024 * 1024  # a real csdef is a few KiB; more is a mistake or an attack

_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def read_model_bytes(path: Path, *, limit: int = MAX_MODEL_BYTES) -> bytes:
    """Read a model file, turning every OS-level failure into a one-line ModelError."""
    file = str(path)
    try:
        if path.is_dir():
            raise ModelError.single(file, "is a directory; expected a file")
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise ModelError.single(file, "does not exist; check the path") from None
    except PermissionError:
        raise ModelError.single(file, "cannot be read (permission denied)") from None
    except IsADirectoryError:
        raise ModelError.single(file, "is a directory; expected a file") from None
    except OSError as exc:
        raise ModelError.single(file, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise ModelError.single(file, f"is larger than {limit // (1024 * 1024)} MiB; not a model")
    return data


def decode_utf8(data: bytes, file: str) -> str:
    """Decode a model file as UTF-8; a UTF-8 BOM is allowed (Visual Studio writes one).

    Raises ModelError for UTF-16/32 files, invalid bytes and empty files.
    """
    for bom, name in _WIDE_BOMS:
        if data.startswith(bom):
            raise ModelError.single(file, f"is {name} encoded; save it as UTF-8", line=1)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        bad = data[exc.start : exc.start + 1].hex().upper()
        raise ModelError.single(
            file, f"is not valid UTF-8 (byte 0x{bad}); save the file as UTF-8", line=line
        ) from None
    if not text.strip():
        raise ModelError.single(file, "is empty; write the model into it or pass another file")
    return text
