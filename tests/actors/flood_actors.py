"""A child actor that floods its parent with tells while it answers asks."""

from __future__ import annotations

from typing import Any

import msgspec

from actors import Actor


class Flood(msgspec.Struct, frozen=True, tag=True):
    """Start telling the parent 0, 1, ... n-1 (from a task of its own); answer at once."""

    n: int


class Flooder(Actor):
    """Floods its parent on Flood; answers anything else with it."""

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Flood):
            self.start_soon(self._flood, message.n)
            return "flooding"
        return message

    async def _flood(self, n: int) -> None:
        assert self.parent is not None
        for i in range(n):
            await self.parent.tell(i)
