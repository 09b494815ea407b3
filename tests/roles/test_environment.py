"""RoleEnvironment and its events, in this process (no role host needed)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from roles import (
    Change,
    RoleEnvironment,
    RoleEnvironmentChangingEventArgs,
    RoleEnvironmentError,
    RoleInstanceStatusCheckEventArgs,
)
from tests.roles.role_parent import environment


@pytest.fixture
def recycles() -> Iterator[list[str]]:
    """RoleEnvironment as a role host sets it up; the list records request_recycle() calls."""
    calls: list[str] = []
    RoleEnvironment._attach(
        environment({"Greeting": "hello", "Queue": "jobs"}), lambda: calls.append("recycle")
    )
    try:
        yield calls
    finally:
        RoleEnvironment._detach()


def test_outside_a_role_every_getter_raises_the_named_error() -> None:
    assert RoleEnvironment.is_available is False
    for getter in (
        lambda: RoleEnvironment.get_config_setting("Greeting"),
        lambda: RoleEnvironment.get_local_resource("Scratch"),
        lambda: RoleEnvironment.current_instance,
        lambda: RoleEnvironment.roles,
        lambda: RoleEnvironment.deployment_id,
        lambda: RoleEnvironment.is_emulated,
        RoleEnvironment.request_recycle,
    ):
        with pytest.raises(RoleEnvironmentError, match="not running in a role"):
            getter()
    RoleEnvironment.changed.subscribe(print)  # subscribing works; it never fires
    RoleEnvironment.changed.unsubscribe(print)


def test_inside_a_role_the_getters_answer(recycles: list[str]) -> None:
    assert RoleEnvironment.is_available is True
    assert RoleEnvironment.get_config_setting("Greeting") == "hello"
    assert RoleEnvironment.deployment_id == "d-test"
    assert RoleEnvironment.is_emulated is True
    scratch = RoleEnvironment.get_local_resource("Scratch")
    assert (scratch.root_path, scratch.maximum_size_mb) == ("/tmp", 10)
    me = RoleEnvironment.current_instance
    assert (me.id, me.role_name, me.update_domain, me.fault_domain) == ("WorkerRole_IN_0", "WorkerRole", 0, 1)
    assert me.instance_endpoints["HttpIn"].port == 20000
    web = RoleEnvironment.roles["WebRole"].instances[0]
    assert web.instance_endpoints["Internal"].ip_endpoint == ("10.0.0.5", 8080)
    RoleEnvironment.request_recycle()
    assert recycles == ["recycle"]


def test_unknown_names_are_errors_listing_the_known_ones(recycles: list[str]) -> None:
    with pytest.raises(RoleEnvironmentError, match=r"'Greting'; known settings: Greeting, Queue"):
        RoleEnvironment.get_config_setting("Greting")
    with pytest.raises(RoleEnvironmentError, match=r"'Temp'; known local resources: Scratch"):
        RoleEnvironment.get_local_resource("Temp")


async def test_events_call_sync_and_async_handlers_in_order() -> None:
    calls: list[str] = []

    async def first(args: RoleEnvironmentChangingEventArgs) -> None:
        calls.append(f"async {args.changes[0].name}")

    def second(args: RoleEnvironmentChangingEventArgs) -> None:
        calls.append(f"sync in_thread={threading.current_thread() is not threading.main_thread()}")
        args.cancel = True

    event = RoleEnvironment.changing
    try:
        event.subscribe(first)
        event += second
        args = RoleEnvironmentChangingEventArgs([Change(kind="setting", name="Queue")])
        await event.emit(args)
        assert calls == ["async Queue", "sync in_thread=True"]
        assert args.cancel is True
        event -= first
        event.unsubscribe(first)  # not subscribed any more: ignored
        await event.emit(RoleEnvironmentChangingEventArgs([]))
        assert calls[2:] == ["sync in_thread=True"]
        assert len(event) == 1
    finally:
        event.clear()


async def test_a_handler_error_reaches_the_host() -> None:
    @RoleEnvironment.status_check.subscribe
    def broken(args: RoleInstanceStatusCheckEventArgs) -> None:
        raise KeyError("oops")

    try:
        with pytest.raises(KeyError):
            await RoleEnvironment.status_check.emit(RoleInstanceStatusCheckEventArgs())
    finally:
        RoleEnvironment.status_check.unsubscribe(broken)


def test_importing_roles_loads_no_async_runtime_or_web_server() -> None:
    code = (
        "import sys, roles; from roles import RoleEntryPoint, RoleEnvironment; "
        "print(sorted(m for m in ('trio', 'hypercorn', 'anyio', 'actors', 'httpx') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
