"""A limited child's actor that answers with a type it names itself: a module of its choosing,
which its parent (root) would import to decode the answer (see test_limited_imports)."""

from __future__ import annotations

import msgspec

from actors import Actor


class Forged(msgspec.Struct, frozen=True):
    """An answer whose wire name points at another module."""


Forged.__module__ = "colorsys"  # any module on the parent's import path, side effects and all


class Forger(Actor):
    async def receive(self, message: object) -> object:
        return Forged()
