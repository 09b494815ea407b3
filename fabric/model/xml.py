"""The XML forms: ServiceDefinition.csdef and ServiceConfiguration.*.cscfg, read and written."""

from __future__ import annotations

from typing import Any, TypeVar
from xml.sax.saxutils import quoteattr

import msgspec

from fabric.model._convert import build, suggest
from fabric.model._source import Loc, Report, SourceMap
from fabric.model._xmlparse import Node, parse_xml
from fabric.model._xmlschema import (
    CONFIGURATION_NS,
    DEFINITION_NS,
    SERVICE_CONFIGURATION,
    SERVICE_DEFINITION,
    XSI_NS,
    Child,
    El,
)
from fabric.model.configuration import ServiceConfiguration
from fabric.model.definition import ServiceDefinition
from fabric.model.errors import ModelError, Problem

T = TypeVar("T", bound=msgspec.Struct)
_XML_NS = "http://www.w3.org/XML/1998/namespace"


class _Reader:
    """Walks a parsed tree along the schema table, producing plain data and a source map."""

    def __init__(self, report: Report, ns: str) -> None:
        self.report = report
        self.smap = report.source
        self.ns = ns
        self.kept: list[dict[str, str]] = []

    def problem(self, node: Node, message: str, attribute: str | None = None) -> None:
        self.report.raw(
            Problem(
                file=self.smap.file,
                line=node.line,
                element=node.tag,
                attribute=attribute,
                message=message,
            )
        )

    def keep(self, node: Node, where: str, name: str, value: str) -> None:
        loc: Loc = ("kept", len(self.kept))
        self.smap.element(loc, node.line, node.tag, {})
        self.kept.append({"where": where, "name": name, "value": value})

    def element(self, node: Node, el: El, loc: Loc, where: str) -> dict[str, Any]:
        fields = {f: a for a, f in el.attrs.items()}
        for child in el.children:
            fields.setdefault(child.field, child.display)
        self.smap.element(loc, node.line, node.tag, fields)
        data: dict[str, Any] = dict(el.fixed)
        for (ns, name), value in node.attrs.items():
            if ns in (XSI_NS, _XML_NS):
                continue  # xsi:schemaLocation and xml:space say nothing about the model
            if ns is None and name in el.attrs:
                data[el.attrs[name]] = value
                self.smap.line((*loc, el.attrs[name]), node.line)
            elif ns is not None or name in el.kept_attrs:
                self.keep(node, where, name, value)
            else:
                known = sorted(el.attrs)
                hint = suggest(name, known) or f"; {node.tag} takes: {', '.join(known) or 'none'}"
                self.problem(node, f"unknown attribute '{name}'{hint}", name)
        self._text(node)
        self._children(node, el, el.children, 0, loc, data, where)
        return data

    def _text(self, node: Node) -> None:
        if node.text.strip():
            self.problem(node, "has text content; the schema allows only elements here")

    def _children(
        self,
        node: Node,
        el: El,
        specs: tuple[Child, ...],
        level: int,
        loc: Loc,
        data: dict[str, Any],
        where: str,
    ) -> None:
        by_tag: dict[str, list[Child]] = {}
        for spec in specs:
            by_tag.setdefault(spec.path[level], []).append(spec)
        seen: set[str] = set()
        for child in node.children:
            if child.ns != self.ns:
                self.problem(child, f"is in namespace '{child.ns or ''}'; expected '{self.ns}'")
                continue
            group = by_tag.get(child.tag)
            if group is None:
                if level == 0 and child.tag in el.kept_children:
                    self.keep(child, where, child.tag, child.to_xml())
                    continue
                allowed = ", ".join(sorted(by_tag)) or "nothing"
                self.problem(
                    child,
                    f"is not allowed in {node.tag}{suggest(child.tag, list(by_tag))}"
                    f" ({node.tag} may contain: {allowed})",
                )
                continue
            leaf = [s for s in group if len(s.path) == level + 1]
            if leaf:
                self._leaf(child, leaf[0], loc, data, where)
                continue
            if child.tag in seen:
                self.problem(child, f"appears twice in {node.tag}; merge them into one")
                continue
            seen.add(child.tag)
            kept = el.wrapper_kept_attrs.get(child.tag, frozenset())
            for (ns, name), value in child.attrs.items():
                if ns in (XSI_NS, _XML_NS):
                    continue
                if name in kept or ns is not None:
                    self.keep(child, f"{where}/{child.tag}", name, value)
                else:
                    self.problem(child, f"unknown attribute '{name}'; remove it", name)
            self._text(child)
            for spec in group:
                self.smap.line((*loc, spec.field), child.line)
            self._children(child, el, tuple(group), level + 1, loc, data, where)

    def _leaf(self, node: Node, spec: Child, loc: Loc, data: dict[str, Any], where: str) -> None:
        if not spec.many and spec.field in data:
            self.problem(node, f"appears more than once; keep one {node.tag}")
            return
        if spec.many:
            items = data.setdefault(spec.field, [])
            item_loc: Loc = (*loc, spec.field, len(items))
        else:
            item_loc = (*loc, spec.field)
        if spec.el is not None:
            name = node.attr("name")
            item_where = f"{where}/{node.tag}" + (f"[@name='{name}']" if name else "")
            value: Any = self.element(node, spec.el, item_loc, item_where)
        else:
            assert spec.attr is not None
            self.smap.element(item_loc, node.line, f"{node.tag}@{spec.attr}", {})
            for (ns, name), _ in node.attrs.items():
                if ns is None and name != spec.attr:
                    self.problem(node, f"unknown attribute '{name}'; remove it", name)
            for extra in node.children:
                self.problem(extra, f"is not allowed in {node.tag}")
            self._text(node)
            value = node.attr(spec.attr)
            if value is None:
                if spec.many:
                    self.problem(node, "is required but missing; add it", spec.attr)
                else:
                    # Leave the field out: the struct check names it at this line.
                    self.smap.line(item_loc, node.line)
                return
        if spec.many:
            data[spec.field].append(value)
        else:
            data[spec.field] = value


def _read(data: bytes, file: str, el: El, ns: str, cls: type[T], other: str) -> tuple[T | None, Report]:
    report = Report(SourceMap(file))
    root = parse_xml(data, file)
    if root.tag != el.tag:
        hint = (
            f"; this looks like a {other}"
            if root.tag in ("ServiceDefinition", "ServiceConfiguration")
            else ""
        )
        raise ModelError.single(
            file, f"root element is <{root.tag}>; expected <{el.tag}>{hint}", line=root.line
        )
    if root.ns != ns:
        found = f"namespace '{root.ns}'" if root.ns else "no namespace"
        raise ModelError.single(file, f'<{el.tag}> has {found}; set xmlns="{ns}"', line=root.line)
    reader = _Reader(report, ns)
    tree = reader.element(root, el, (), el.tag)
    if reader.kept:
        tree["kept"] = reader.kept
    # Convert even after structural errors, so type errors are reported with them at once.
    value = build(cls, tree, (), report, text=True)
    return (None if report.has_errors else value), report


def parse_definition_xml(data: bytes, file: str) -> tuple[ServiceDefinition | None, Report]:
    """Read a .csdef; returns the model (None if it has errors) and every problem found."""
    return _read(
        data,
        file,
        SERVICE_DEFINITION,
        DEFINITION_NS,
        ServiceDefinition,
        "service configuration (.cscfg)",
    )


def parse_configuration_xml(data: bytes, file: str) -> tuple[ServiceConfiguration | None, Report]:
    """Read a .cscfg; returns the model (None if it has errors) and every problem found."""
    return _read(
        data,
        file,
        SERVICE_CONFIGURATION,
        CONFIGURATION_NS,
        ServiceConfiguration,
        "service definition (.csdef)",
    )


def definition_from_xml(data: bytes, file: str = "ServiceDefinition.csdef") -> ServiceDefinition:
    """Parse .csdef bytes into a ServiceDefinition; raises ModelError listing every problem."""
    value, report = parse_definition_xml(data, file)
    if value is None or report.has_errors:
        raise ModelError(report.problems)
    return value


def configuration_from_xml(data: bytes, file: str = "ServiceConfiguration.cscfg") -> ServiceConfiguration:
    """Parse .cscfg bytes into a ServiceConfiguration; raises ModelError listing every problem."""
    value, report = parse_configuration_xml(data, file)
    if value is None or report.has_errors:
        raise ModelError(report.problems)
    return value


# --- writing -------------------------------------------------------------------------------


class _Out:
    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.attrs: list[tuple[str, str]] = []
        self.children: list[_Out] = []

    def render(self, depth: int, lines: list[str]) -> None:
        pad = "  " * depth
        attrs = "".join(f" {k}={quoteattr(v)}" for k, v in self.attrs)
        if not self.children:
            lines.append(f"{pad}<{self.tag}{attrs} />")
            return
        lines.append(f"{pad}<{self.tag}{attrs}>")
        for child in self.children:
            child.render(depth + 1, lines)
        lines.append(f"{pad}</{self.tag}>")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _write(el: El, value: msgspec.Struct, out: _Out) -> None:
    defaults = {f.name: f.default for f in msgspec.structs.fields(value)}
    for attr, field in el.attrs.items():
        v = getattr(value, field)
        if v is None or v == defaults.get(field):
            continue
        out.attrs.append((attr, _fmt(v)))
    wrappers: dict[tuple[str, ...], _Out] = {}
    done: set[str] = set()
    for spec in el.children:
        if spec.field in done:
            continue
        done.add(spec.field)
        specs = [s for s in el.children if s.field == spec.field]
        v = getattr(value, spec.field)
        items = v if spec.many else (() if v is None else (v,))
        for item in items:
            chosen = next(
                (
                    s
                    for s in specs
                    if s.el is None or all(getattr(item, k) == w for k, w in s.el.fixed.items())
                ),
                spec,
            )
            parent = out
            for depth in range(1, len(chosen.path)):
                key = chosen.path[:depth]
                if key not in wrappers:
                    wrappers[key] = _Out(chosen.path[depth - 1])
                    parent.children.append(wrappers[key])
                parent = wrappers[key]
            node = _Out(chosen.path[-1])
            if chosen.el is not None:
                _write(chosen.el, item, node)
            else:
                assert chosen.attr is not None
                node.attrs.append((chosen.attr, _fmt(item)))
            parent.children.append(node)


def _to_xml(el: El, ns: str, value: msgspec.Struct) -> bytes:
    root = _Out(el.tag)
    _write(el, value, root)
    root.attrs.insert(0, ("xmlns", ns))
    lines = ['<?xml version="1.0" encoding="utf-8"?>']
    root.render(0, lines)
    return ("\n".join(lines) + "\n").encode("utf-8")


def definition_to_xml(definition: ServiceDefinition) -> bytes:
    """Write a ServiceDefinition as .csdef XML (kept-but-unused items are not written back)."""
    return _to_xml(SERVICE_DEFINITION, DEFINITION_NS, definition)


def configuration_to_xml(configuration: ServiceConfiguration) -> bytes:
    """Write a ServiceConfiguration as .cscfg XML (kept-but-unused items are not written back)."""
    return _to_xml(SERVICE_CONFIGURATION, CONFIGURATION_NS, configuration)
