"""Toxics: faults injected into proxied connections, with toxiproxy's kinds and units.

Each toxic acts on one direction (``stream``): ``upstream`` is client->instance and
``downstream`` instance->client (toxiproxy's default). ``toxicity`` is the chance that
a given connection is affected, drawn once per connection when the toxic meets it.
Toxics apply to connections already open as well as to new ones.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from ._errors import InvalidSpecError

Stream = Literal["upstream", "downstream"]
#: The largest number a toxic takes (a day in milliseconds; bytes per second well past any link).
MAX_VALUE = 86_400_000


class _ToxicBase(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    stream: Stream = "downstream"
    toxicity: float = 1.0

    def __post_init__(self) -> None:
        if self.stream not in ("upstream", "downstream"):
            raise InvalidSpecError(f"toxic stream {self.stream!r}: use upstream or downstream")
        if not 0.0 <= self.toxicity <= 1.0:
            raise InvalidSpecError(f"toxicity {self.toxicity}: use a probability in 0..1")
        for name in self.__struct_fields__:
            value = getattr(self, name)
            if isinstance(value, int | float) and not isinstance(value, bool) and not 0 <= value <= MAX_VALUE:
                raise InvalidSpecError(f"toxic {name}={value}: use a value from 0 to {MAX_VALUE:,}")


class Latency(_ToxicBase, frozen=True, kw_only=True, tag="latency"):
    """Delay every chunk by ``latency`` ms, plus or minus up to ``jitter`` ms."""

    latency: float
    jitter: float = 0.0


class Bandwidth(_ToxicBase, frozen=True, kw_only=True, tag="bandwidth"):
    """Pass data at no more than ``rate`` KB/s (1 KB = 1024 bytes)."""

    rate: float

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.rate <= 0:
            raise InvalidSpecError(f"bandwidth rate {self.rate}: use a rate > 0 KB/s")


class Timeout(_ToxicBase, frozen=True, kw_only=True, tag="timeout"):
    """Drop all data, and close the connection after ``timeout`` ms (0: never close)."""

    timeout: float = 0.0


class ResetPeer(_ToxicBase, frozen=True, kw_only=True, tag="reset_peer"):
    """Reset both sides (TCP RST) ``timeout`` ms after the next data passes."""

    timeout: float = 0.0


class SlowClose(_ToxicBase, frozen=True, kw_only=True, tag="slow_close"):
    """Hold a close (end of stream) back for ``delay`` ms."""

    delay: float


Toxic = Latency | Bandwidth | Timeout | ResetPeer | SlowClose
"""Any toxic kind (a tagged union, so it can cross a process boundary)."""
