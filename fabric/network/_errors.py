"""Errors a caller of the load balancer can cause, each saying what to change."""

from __future__ import annotations


class NetworkError(Exception):
    """Base class of the load balancer's errors."""


class InvalidSpecError(NetworkError, ValueError):
    """An endpoint, probe or toxic description is not valid."""


class NoFreePortError(NetworkError, OSError):
    """No port could be bound for an endpoint."""


class UnknownBackendError(NetworkError, KeyError):
    """An instance id is not in the load balancer's pool."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown backend"


class UnknownToxicError(NetworkError, KeyError):
    """A toxic id is not active on this load balancer."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "unknown toxic"


class ToxicsUnsupportedError(NetworkError):
    """Toxics were asked of a load balancer that cannot apply them."""
