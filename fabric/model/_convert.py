"""Turn plain data (from XML or TOML) into model structs, reporting every bad value at once."""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Hashable
from typing import Any, TypeVar, cast

import msgspec
import msgspec.inspect as mi

from fabric.model._source import Loc, Report
from fabric.model.definition import MAX_INT, RoleDefinition
from fabric.model.vmsizes import VM_SIZES, UnknownVmSizeError, vm_size

T = TypeVar("T")

_BAD = object()  # marks a value that failed to convert (already reported)
_INT = re.compile(r"[+-]?[0-9]+")
# XML 1.0 cannot carry these, and no command line or setting needs them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


@functools.cache
def _info(cls: Hashable) -> mi.StructType:
    info = mi.type_info(cls)
    assert isinstance(info, mi.StructType)
    return info


def suggest(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """A "; did you mean 'x'?" hint for a misspelt name, or an empty string."""
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return f"; did you mean '{lowered[word.lower()]}'?"
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.7)
    return f"; did you mean '{close[0]}'?" if close else ""


def build(cls: type[T], data: Any, loc: Loc, report: Report, *, text: bool) -> T | None:
    """Convert `data` to `cls`, reporting problems at `loc`; None if anything was wrong.

    `text` is True for XML, whose attribute values are all strings to be parsed.
    """
    value = _struct(_info(cast(Hashable, cls)), data, loc, report, text)
    return None if value is _BAD else cast(T, value)


def _struct(info: mi.StructType, data: Any, loc: Loc, report: Report, text: bool) -> Any:
    if not isinstance(data, dict):
        report.error(loc, f"expected a table, got {_kind(data)}")
        return _BAD
    fields = {f.encode_name: f for f in info.fields}
    ok = True
    for key in data:
        if key not in fields:
            report.error((*loc, key), f"unknown key '{key}'{suggest(key, list(fields))}")
            ok = False
    kwargs: dict[str, Any] = {}
    for f in info.fields:
        if f.encode_name not in data:
            if f.required:
                report.error((*loc, f.name), "is required but missing; add it")
                ok = False
            continue
        value = _value(f.type, data[f.encode_name], (*loc, f.name), report, text)
        if value is _BAD:
            ok = False
        else:
            kwargs[f.name] = value
    for name, check in _CHECKS.get(info.cls, {}).items():
        problem = check(kwargs[name]) if name in kwargs else None
        if problem:
            report.error((*loc, name), problem)
            ok = False
    if not ok:
        return _BAD
    return info.cls(**kwargs)


def _known_vm_size(name: str) -> str | None:
    try:
        vm_size(name)
    except UnknownVmSizeError:
        return (
            f"unknown VM size '{name}'{suggest(name, list(VM_SIZES))} "
            "(sizes: ExtraSmall, Small, Medium, Large, ExtraLarge, A5-A11, Standard_*)"
        )
    return None


# Value rules that go beyond a field's type, checked with the types so they are reported in
# the same pass as every other bad value.
_CHECKS: dict[type, dict[str, Callable[[Any], str | None]]] = {
    RoleDefinition: {"vm_size": _known_vm_size},
}


def _value(t: mi.Type, v: Any, loc: Loc, report: Report, text: bool) -> Any:
    if isinstance(t, mi.UnionType):
        return _union(t, v, loc, report, text)
    if isinstance(t, mi.IntType):
        return _int(t, v, loc, report, text, ())
    if isinstance(t, mi.BoolType):
        if text and isinstance(v, str) and v.strip() in ("true", "false", "1", "0"):
            return v.strip() in ("true", "1")
        if not text and isinstance(v, bool):
            return v
        report.error(loc, f"{_show(v)} is not true or false; use true or false")
        return _BAD
    if isinstance(t, mi.StrType):
        if not isinstance(v, str):
            report.error(loc, f"expected a string, got {_kind(v)}")
            return _BAD
        if t.min_length and len(v) < t.min_length:
            report.error(loc, "must not be empty")
            return _BAD
        if _CONTROL.search(v):
            report.error(loc, "contains a control character; remove it")
            return _BAD
        return v
    if isinstance(t, mi.LiteralType):
        choices = [str(c) for c in t.values]
        if isinstance(v, str) and v in t.values:
            return v
        hint = suggest(v, choices) if isinstance(v, str) else ""
        report.error(loc, f"{_show(v)} is not one of: {', '.join(choices)}{hint}")
        return _BAD
    if isinstance(t, mi.StructType):
        return _struct(t, v, loc, report, text)
    if isinstance(t, mi.VarTupleType):
        if not isinstance(v, list):
            report.error(loc, f"expected a list, got {_kind(v)}")
            return _BAD
        items = [_value(t.item_type, item, (*loc, i), report, text) for i, item in enumerate(v)]
        return _BAD if any(item is _BAD for item in items) else tuple(items)
    raise TypeError(f"model field type {t!r} is not supported")  # a bug in the model, not input


def _union(t: mi.UnionType, v: Any, loc: Loc, report: Report, text: bool) -> Any:
    literals = [c for alt in t.types if isinstance(alt, mi.LiteralType) for c in alt.values]
    if v in literals:
        return v
    others = [alt for alt in t.types if not isinstance(alt, mi.LiteralType | mi.NoneType)]
    if not others:  # an optional enum
        return _value(mi.LiteralType(tuple(literals)), v, loc, report, text)
    if len(others) != 1:
        raise TypeError(f"model union {t!r} is not supported")
    if isinstance(others[0], mi.IntType):
        return _int(others[0], v, loc, report, text, tuple(str(c) for c in literals))
    return _value(others[0], v, loc, report, text)


def _int(t: mi.IntType, v: Any, loc: Loc, report: Report, text: bool, also: tuple[str, ...]) -> Any:
    alt = "".join(f" or '{a}'" for a in also)
    if text and isinstance(v, str) and _INT.fullmatch(v.strip()):
        n = int(v.strip())
    elif not text and isinstance(v, int) and not isinstance(v, bool):
        n = v
    else:
        quoted = not text and isinstance(v, str) and _INT.fullmatch(v.strip())
        fix = "remove the quotes" if quoted else f"use a number{alt}"
        report.error(loc, f"{_show(v)} is not a whole number; {fix}")
        return _BAD
    lo = t.ge if t.ge is not None else (t.gt + 1 if t.gt is not None else None)
    hi = t.le if t.le is not None else (t.lt - 1 if t.lt is not None else None)
    shown_hi = None if hi is not None and hi >= MAX_INT else hi  # xs:int's cap is no advice
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        if lo is not None and shown_hi is not None:
            want = f"from {lo} to {hi}"
        else:
            want = f"of at least {lo}" if lo is not None else f"of at most {hi}"
        if shown_hi is None and hi is not None and n > hi:
            report.error(loc, f"{n} is too large; use a number of at most {hi}{alt}")
        else:
            report.error(loc, f"{n} is out of range; use a number {want}{alt}")
        return _BAD
    return n


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else f"{_kind(v)} {v!r}"


def _kind(v: Any) -> str:
    names = {dict: "a table", list: "a list", str: "a string", bool: "a boolean", int: "a number"}
    return names.get(type(v), type(v).__name__)


def to_data(value: msgspec.Struct) -> dict[str, Any]:
    """The plain-data form of a struct with defaults left out (the inverse of `build`)."""
    data: dict[str, Any] = {}
    for f in msgspec.structs.fields(value):
        v = getattr(value, f.name)
        # msgspec's omit_defaults compares some values by identity; compare by value here.
        if not f.required and v == f.default:
            continue
        data[f.encode_name] = _plain(v)
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, msgspec.Struct):
        return to_data(value)
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
