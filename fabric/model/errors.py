"""Problems found in a service model, and the errors that carry them."""

from __future__ import annotations

from typing import Literal

import msgspec

Severity = Literal["error", "warning"]


class Problem(msgspec.Struct, frozen=True, kw_only=True):
    """One thing wrong (or worth a warning) in one file, located as precisely as we can."""

    file: str
    line: int | None = None
    element: str = ""
    attribute: str | None = None
    message: str
    severity: Severity = "error"

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        what = self.element
        if self.attribute:
            if not what:
                what = self.attribute
            elif what[0].islower():  # a TOML key path: roles[0].port
                what = f"{what}.{self.attribute}"
            elif self.attribute[0].isupper() or "@" in self.attribute:  # a child element
                what = f"{what}/{self.attribute}"
            else:
                what = f"{what}@{self.attribute}"
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{what + ': ' if what else ''}{self.message}"


class ModelError(Exception):
    """A definition, configuration or package a user must fix; carries every problem found."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, file: str, message: str, *, line: int | None = None) -> ModelError:
        """Build the error for one problem that concerns a whole file."""
        return cls([Problem(file=file, line=line, message=message)])

    @property
    def errors(self) -> tuple[Problem, ...]:
        """The problems of severity error."""
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """The problems of severity warning."""
        return tuple(p for p in self.problems if p.severity == "warning")


class PackageError(ModelError):
    """A .cspkg that is corrupt, hostile or does not match its manifest."""


class XPathError(ModelError):
    """A RoleInstanceValue xpath that cannot be resolved."""


class UnsupportedXPathError(XPathError):
    """An xpath outside the forms the role environment supports."""


class UnresolvedXPathError(XPathError):
    """A supported xpath naming a setting, resource or endpoint the instance does not have."""
