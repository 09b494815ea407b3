"""The TOML forms: service.toml and config.<env>.toml, mapping one to one onto the model structs."""

from __future__ import annotations

import re
import tomllib
from typing import Any, TypeVar

import msgspec

from fabric.model._convert import build, to_data
from fabric.model._files import decode_utf8
from fabric.model._source import Loc, Report, TomlSourceMap
from fabric.model.configuration import ServiceConfiguration
from fabric.model.definition import ServiceDefinition
from fabric.model.errors import ModelError

T = TypeVar("T", bound=msgspec.Struct)

_HEADER = re.compile(r"\s*(\[\[?)(.*?)(\]\]?)\s*(#.*)?$")
_KEY = re.compile(
    r"""\s*((?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*'))*)\s*="""
)
_PART = re.compile(r"""\s*([A-Za-z0-9_-]+|"(?:[^"\\]|\\.)*"|'[^']*')\s*(\.|$)""")
_AT_LINE = re.compile(r"\s*\(at line (\d+), column \d+\)$")


def _keys(text: str) -> list[str]:
    parts = []
    for match in _PART.finditer(text.strip()):
        part = match.group(1)
        parts.append(part[1:-1] if part[:1] in "\"'" else part)
    return parts


def scan_lines(text: str) -> dict[Loc, int]:
    """Best-effort map from model locations to the TOML line that sets them.

    Follows table headers, arrays of tables and `key = value` lines; values inside inline
    tables or multi-line strings fall back to the line of their table.
    """
    lines: dict[Loc, int] = {}
    arrays: dict[Loc, int] = {}
    current: Loc = ()
    in_string: str | None = None

    def resolve(keys: list[str]) -> Loc:
        loc: Loc = ()
        for key in keys:
            loc = (*loc, key)
            if loc in arrays:
                loc = (*loc, arrays[loc] - 1)
        return loc

    for number, line in enumerate(text.splitlines(), start=1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        header = _HEADER.match(line)
        if header and header.group(1) == "[[" and header.group(3) == "]]":
            keys = _keys(header.group(2))
            if keys:
                array = (*resolve(keys[:-1]), keys[-1])
                index = arrays.get(array, 0)
                arrays[array] = index + 1
                current = (*array, index)
                lines.setdefault(array, number)
                lines[current] = number
            continue
        if header and header.group(1) == "[" and header.group(3) == "]":
            current = resolve(_keys(header.group(2)))
            lines.setdefault(current, number)
            continue
        key = _KEY.match(line)
        if key:
            lines.setdefault((*current, *_keys(key.group(1))), number)
            for quote in ('"""', "'''"):
                if line.count(quote) % 2 == 1:
                    in_string = quote
    return lines


def _read(data: bytes, file: str, cls: type[T], own: str, other: str) -> tuple[T | None, Report]:
    text = decode_utf8(data, file)
    try:
        tree = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        at = _AT_LINE.search(message)
        raise ModelError.single(
            file,
            f"is not valid TOML: {_AT_LINE.sub('', message)}",
            line=int(at.group(1)) if at else None,
        ) from None
    if own not in tree and other in tree:
        kind = "configuration" if cls is ServiceDefinition else "service definition"
        raise ModelError.single(file, f"looks like a {kind} TOML ('{other}' is set); check the path")
    source = TomlSourceMap(file)
    source.lines = scan_lines(text)
    report = Report(source)
    value = build(cls, tree, (), report, text=False)
    return (None if report.has_errors else value), report


def parse_definition_toml(data: bytes, file: str) -> tuple[ServiceDefinition | None, Report]:
    """Read a service.toml; returns the model (None if it has errors) and every problem found."""
    return _read(data, file, ServiceDefinition, "name", "service_name")


def parse_configuration_toml(data: bytes, file: str) -> tuple[ServiceConfiguration | None, Report]:
    """Read a configuration TOML; returns the model (None if it has errors) and every problem."""
    return _read(data, file, ServiceConfiguration, "service_name", "name")


def definition_from_toml(data: bytes, file: str = "service.toml") -> ServiceDefinition:
    """Parse service.toml bytes; raises ModelError listing every problem."""
    value, report = parse_definition_toml(data, file)
    if value is None:
        raise ModelError(report.problems)
    return value


def configuration_from_toml(data: bytes, file: str = "config.toml") -> ServiceConfiguration:
    """Parse configuration TOML bytes; raises ModelError listing every problem."""
    value, report = parse_configuration_toml(data, file)
    if value is None:
        raise ModelError(report.problems)
    return value


# --- writing -------------------------------------------------------------------------------

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_tables(value: Any) -> bool:
    return isinstance(value, list | tuple) and bool(value) and all(isinstance(v, dict) for v in value)


def _emit(data: dict[str, Any], prefix: tuple[str, ...], out: list[str]) -> None:
    for key, value in data.items():
        if not isinstance(value, dict) and not _is_tables(value):
            out.append(f"{key} = {_scalar(value)}")
    for key, value in data.items():
        path = ".".join((*prefix, key))
        if isinstance(value, dict):
            out.extend(("", f"[{path}]"))
            _emit(value, (*prefix, key), out)
        elif _is_tables(value):
            for item in value:
                out.extend(("", f"[[{path}]]"))
                _emit(item, (*prefix, key), out)


def _to_toml(value: msgspec.Struct) -> bytes:
    out: list[str] = []
    _emit(to_data(value), (), out)
    return ("\n".join(out).lstrip("\n") + "\n").encode("utf-8")


def definition_to_toml(definition: ServiceDefinition) -> bytes:
    """Write a ServiceDefinition as service.toml (defaults left out)."""
    return _to_toml(definition)


def configuration_to_toml(configuration: ServiceConfiguration) -> bytes:
    """Write a ServiceConfiguration as a configuration TOML (defaults left out)."""
    return _to_toml(configuration)
