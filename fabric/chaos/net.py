"""Network faults as a user writes them: ``30s``, ``100ms``, ``5%``, ``1mbit`` (tc's units), for
`fabric chaos net` and the ``net`` faults of a scenario. Each parser raises a one-line ValueError."""

from __future__ import annotations

import re
from typing import Any

from fabric.controller.chaos.messages import NetworkFault, Target

MAX_SECONDS = 86_400.0
_NUMBER = r"(\d+(?:\.\d+)?)"
_TIME_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}
_RATE_UNITS = {"bit": 1, "kbit": 10**3, "mbit": 10**6, "gbit": 10**9}


def parse_seconds(text: str | float, what: str = "duration", most: float = MAX_SECONDS) -> float:
    """``30s``, ``100ms``, ``2m``, ``1h`` or a number of seconds; above 0, at most ``most``."""
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        m = re.fullmatch(_NUMBER + r"\s*(ms|s|m|h|)", text.strip().lower())
        if m is None:
            raise ValueError(f"{what} {text!r}: write a time as 30s, 100ms, 2m or 1h")
        seconds = float(m.group(1)) * _TIME_UNITS[m.group(2)]
    if not 0 < seconds <= most:
        raise ValueError(f"{what} {text!r}: above 0 and at most {most:g} s")
    return seconds


def parse_percent(text: str | float) -> float:
    """``5%`` or ``5``: a share of packets, above 0 and at most 100."""
    m = re.fullmatch(_NUMBER + r"\s*%?", str(text).strip())
    if m is None or not 0 < float(m.group(1)) <= 100:
        raise ValueError(f"loss {text!r}: a percentage above 0 and at most 100, as 5%")
    return float(m.group(1))


def parse_rate(text: str | int) -> int:
    """``1mbit``, ``500kbit``, ``1gbit``, ``64000bit`` (tc's units, bits per second): 8kbit..1000gbit."""
    m = re.fullmatch(_NUMBER + r"\s*(bit|kbit|mbit|gbit)", str(text).strip().lower())
    if m is None:
        raise ValueError(f"bandwidth {text!r}: write a rate as tc does, e.g. 500kbit, 1mbit, 1gbit")
    bits = round(float(m.group(1)) * _RATE_UNITS[m.group(2)])
    if not 8_000 <= bits <= 10**12:
        raise ValueError(f"bandwidth {text!r}: between 8kbit and 1000gbit")
    return bits


def network_fault(
    target: Target,
    *,
    partition: bool = False,
    loss: Any = None,
    bandwidth: Any = None,
    delay: Any = None,
    jitter: Any = None,
    duration: Any = None,
) -> NetworkFault:
    """A NetworkFault from a user's words: exactly one of partition, loss, bandwidth, delay.

    Raises:
        ValueError: a value out of range, none or several faults, or no duration.
    """
    given = [name for name, v in (("--partition", partition or None), ("--loss", loss),
                                  ("--bandwidth", bandwidth), ("--delay", delay)) if v is not None]  # fmt: skip
    if len(given) != 1:
        raise ValueError(
            f"give exactly one of --partition, --loss, --bandwidth or --delay (got {', '.join(given) or 'none'})"
        )
    if jitter is not None and delay is None:
        raise ValueError("--jitter goes with --delay")
    if duration is None:
        raise ValueError("give --duration (e.g. 30s): the host undoes the fault itself at its end")
    return NetworkFault(
        target=target,
        partition=bool(partition),
        loss=parse_percent(loss) if loss is not None else 0.0,
        bandwidth=parse_rate(bandwidth) if bandwidth is not None else 0,
        delay=parse_seconds(delay, "delay", 60) if delay is not None else 0.0,
        jitter=parse_seconds(jitter, "jitter", 60) if jitter is not None else 0.0,
        duration=parse_seconds(duration),
    )
