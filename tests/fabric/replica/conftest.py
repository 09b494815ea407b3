"""The real PostgreSQL server fixture of the controller tests, for the replica tests."""

from tests.fabric.controller.conftest import postgres  # noqa: F401
