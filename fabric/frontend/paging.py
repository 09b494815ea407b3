"""Paging of large views in the API: a bounded ``limit`` and an opaque ``cursor`` taken from
the query string, each refused with a 400 when out of bounds."""

from __future__ import annotations

from fabric.frontend._http import Request
from fabric.frontend.api import ApiError

#: a cursor's length at most (it is only ever a next_cursor the API gave)
MAX_CURSOR = 300


def limit_of(r: Request, high: int) -> int | None:
    """The ``limit`` query parameter, 1..``high``; None when absent (no paging)."""
    text = r.query.get("limit")
    if text is None:
        return None
    if not (text.isascii() and text.isdigit() and len(text) < 10 and 1 <= int(text) <= high):
        raise ApiError(400, "InvalidQueryParameterValue", f"limit must be a whole number from 1 to {high}")
    return int(text)


def cursor_of(r: Request) -> str:
    """The ``cursor`` query parameter ("" when absent): printable, at most MAX_CURSOR characters."""
    text = r.query.get("cursor", "")
    if len(text) > MAX_CURSOR or not text.isprintable():
        raise ApiError(400, "InvalidQueryParameterValue", "cursor must be the next_cursor of a previous page")
    return text
