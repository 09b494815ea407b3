"""Where each part of a model came from (file, line, element name), and a problem collector."""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from fabric.model.errors import ModelError, Problem, Severity

# A location inside a model, in field names and list indices: ("roles", 0, "input_endpoints", 1).
Loc = tuple[str | int, ...]


class SourceMap:
    """Maps model locations to lines and to the names the user wrote (XML tags or TOML keys)."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Loc, int] = {}
        self.names: dict[Loc, str] = {}
        self.fields: dict[Loc, dict[str, str]] = {}

    def element(self, loc: Loc, line: int | None, name: str, fields: dict[str, str]) -> None:
        """Record that the element (struct) at `loc` starts at `line` and is called `name`."""
        if line is not None:
            self.lines.setdefault(loc, line)
        self.names[loc] = name
        self.fields[loc] = fields

    def line(self, loc: Loc, line: int | None) -> None:
        """Record the line of a single value."""
        if line is not None:
            self.lines.setdefault(loc, line)

    def _split(self, loc: Loc) -> tuple[Loc, str | None]:
        if loc in self.names:
            return loc, None
        if loc and isinstance(loc[-1], str) and loc[:-1] in self.names:
            return loc[:-1], loc[-1]
        for cut in range(len(loc) - 1, -1, -1):
            if loc[:cut] in self.names:
                rest = loc[cut:]
                return loc[:cut], rest[0] if isinstance(rest[0], str) else None
        return (), None

    def locate(self, loc: Loc) -> tuple[int | None, str, str | None]:
        """Return (line, element name, attribute name) for a model location."""
        line = None
        for cut in range(len(loc), -1, -1):
            if loc[:cut] in self.lines:
                line = self.lines[loc[:cut]]
                break
        elem, field = self._split(loc)
        name = self.names.get(elem, "")
        attr = self.fields.get(elem, {}).get(field, field) if field is not None else None
        return line, name, attr


class TomlSourceMap(SourceMap):
    """A source map whose element names are TOML key paths such as `roles[0].startup[1]`."""

    def _split(self, loc: Loc) -> tuple[Loc, str | None]:
        if loc and isinstance(loc[-1], str):
            return loc[:-1], loc[-1]
        return loc, None

    def locate(self, loc: Loc) -> tuple[int | None, str, str | None]:
        """Return (line, dotted table path, key) for a model location."""
        line, _, attr = super().locate(loc)
        elem, _field = self._split(loc)
        return line, render_path(elem), attr


def render_path(loc: Loc) -> str:
    """Render a location as a TOML-style key path: `roles[0].input_endpoints[1]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


class Report:
    """Collects every problem in one file so all of them are reported at once."""

    def __init__(self, source: SourceMap) -> None:
        self.source = source
        self.problems: list[Problem] = []

    @property
    def file(self) -> str:
        """The file this report is about."""
        return self.source.file

    def add(self, loc: Loc, message: str, severity: Severity = "error") -> None:
        """Record a problem at a model location."""
        line, element, attribute = self.source.locate(loc)
        self.problems.append(
            Problem(
                file=self.source.file,
                line=line,
                element=element,
                attribute=attribute,
                message=message,
                severity=severity,
            )
        )

    def error(self, loc: Loc, message: str) -> None:
        """Record an error at a model location."""
        self.add(loc, message, "error")

    def warn(self, loc: Loc, message: str) -> None:
        """Record a warning at a model location."""
        self.add(loc, message, "warning")

    def raw(self, problem: Problem) -> None:
        """Record an already located problem."""
        self.problems.append(problem)

    @property
    def has_errors(self) -> bool:
        """Whether any problem so far is an error."""
        return any(p.severity == "error" for p in self.problems)


def raise_if_errors(problems: Iterable[Problem], *, strict: bool = False) -> None:
    """Raise ModelError with every problem if any is an error (or any at all when strict)."""
    found = list(problems)
    if any(p.severity == "error" or strict for p in found):
        if strict:
            # TreatWarningsAsErrors: a kept-but-unused element fails the load.
            found = [
                msgspec.structs.replace(p, severity="error", message=f"{p.message} (strict mode)")
                if p.severity == "warning"
                else p
                for p in found
            ]
        raise ModelError(found)
