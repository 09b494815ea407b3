"""roles.testing: a role run in process by the fabric's own role host code, on virtual time."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import anyio
import pytest
import trio

from roles import RoleEntryPoint, RoleEnvironment, RoleEnvironmentError
from roles.testing import Change, PeerRole, RoleFailed, open_role, role_spec
from tests.roles.role_parent import FIXTURES

pytestmark = pytest.mark.timeout(20)


class Greeter(RoleEntryPoint):
    """Reads what RoleEnvironment tells it, greets once a minute, cleans up on stop."""

    async def on_start(self) -> bool:
        self.greeting = RoleEnvironment.get_config_setting("Greeting")
        self.scratch = Path(RoleEnvironment.get_local_resource("Scratch").root_path)
        self.me = RoleEnvironment.current_instance
        self.store = RoleEnvironment.roles["Store"].instances[1].instance_endpoints["Data"]
        self.greetings: list[str] = []
        self.events: list[str] = []
        RoleEnvironment.status_check.subscribe(self.check)
        RoleEnvironment.changing.subscribe(self.changing)
        RoleEnvironment.changed.subscribe(self.changed)
        RoleEnvironment.stopping.subscribe(self.stopping)
        self.busy = False
        return True

    async def run(self) -> None:
        while True:
            self.greetings.append(f"{self.greeting} at {anyio.current_time():.0f}")
            await anyio.sleep(60)

    async def on_stop(self) -> None:
        (self.scratch / "stopped").write_text("bye")
        self.events.append("on_stop")

    def check(self, args) -> None:
        if self.busy:
            args.set_busy()

    async def changing(self, args) -> None:
        self.events.append(f"changing {[c.name for c in args.changes]} saw {self.setting()}")
        args.cancel = any(c.name == "Port" for c in args.changes)

    def changed(self, args) -> None:  # a plain handler: runs in a worker thread
        self.events.append(f"changed saw {self.setting()}")

    def stopping(self, args) -> None:
        self.events.append("stopping")

    def setting(self) -> str:
        return RoleEnvironment.get_config_setting("Greeting")


def greeter(**keywords: object) -> dict[str, object]:
    """The keywords that give Greeter the environment it reads."""
    return {
        "role": "Front",
        "settings": {"Greeting": "hello", "Port": "1"},
        "local_storage": {"Scratch": 10},
        "endpoints": {"HttpIn": "http"},
        "instances": 3,
        "index": 2,
        "other_roles": {"Store": PeerRole(instances=2, endpoints={"Data": "tcp"})},
        **keywords,
    }


async def test_the_role_sees_the_environment_built_from_keywords(role_harness, autojump_clock) -> None:
    async with role_harness(Greeter, **greeter()) as role:
        assert role.phase == "new"
        with pytest.raises(RuntimeError, match="call start"):
            role.entry  # noqa: B018
        assert await role.start() is True
        assert role.phase == "ready"
        entry = role.entry
        assert isinstance(entry, Greeter)
        assert entry.greeting == "hello"
        assert entry.scratch.is_dir() and entry.scratch.name == "Scratch"
        assert entry.me.id == "Front_IN_2" and entry.me.role_name == "Front"
        http_in = entry.me.instance_endpoints["HttpIn"]
        with anyio.fail_after(1):  # a free local port: the role can listen on it
            listener = await anyio.create_tcp_listener(local_host=http_in.host, local_port=http_in.port)
            await listener.aclose()
        assert entry.store.protocol == "tcp" and entry.store.host == "127.0.0.1"
        assert [i.id for i in RoleEnvironment.roles["Front"].instances] == [
            "Front_IN_0",
            "Front_IN_1",
            "Front_IN_2",
        ]
        assert await role.stop() is True
        assert role.phase == "stopped"
        assert entry.events == ["stopping", "on_stop"]
        assert (entry.scratch / "stopped").read_text() == "bye"
    assert not RoleEnvironment.is_available  # back to "not in a role"


async def test_a_role_sleeping_for_minutes_runs_on_the_autojump_clock(role_harness, autojump_clock) -> None:
    async with role_harness(Greeter, **greeter()) as role:
        await role.start()
        await anyio.sleep(10 * 60 + 1)
        entry = role.entry
        assert isinstance(entry, Greeter)
        assert entry.greetings[:2] == ["hello at 0", "hello at 60"]
        assert len(entry.greetings) == 11
        await role.stop()


async def test_status_check_reads_back_whether_the_role_set_busy(role_harness, autojump_clock) -> None:
    async with role_harness(Greeter, **greeter()) as role:
        await role.start()
        assert await role.status_check() is False
        assert isinstance(role.entry, Greeter)
        role.entry.busy = True
        assert await role.status_check() is True


async def test_changing_sees_old_values_changed_the_new_ones_and_a_cancel_is_reported(
    role_harness, autojump_clock
) -> None:
    async with role_harness(Greeter, **greeter()) as role:
        await role.start()
        entry = role.entry
        assert isinstance(entry, Greeter)
        result = await role.change_settings({"Greeting": "hi", "Port": "1"})
        assert result.changes == [Change(kind="setting", name="Greeting")] and not result.cancelled
        assert RoleEnvironment.get_config_setting("Greeting") == "hi"
        cancelled = await role.change_settings({"Port": "2"})
        assert cancelled.cancelled
        assert RoleEnvironment.get_config_setting("Port") == "1"  # not applied: the fabric recycles
        assert entry.events == [
            "changing ['Greeting'] saw hello",
            "changed saw hi",
            "changing ['Port'] saw hi",
        ]
        assert await role.changing([Change(kind="topology", name="Store")]) is False
        assert "changed setting Greeting" in " ".join(role.log)  # the host's own log lines
        with pytest.raises(ValueError, match="Nope not declared by the role; declared: Greeting, Port"):
            await role.change_settings({"Nope": "x"})


class SlowStop(RoleEntryPoint):
    async def on_stop(self) -> None:
        await anyio.sleep(3600)


async def test_on_stop_is_cut_at_its_time_limit(role_harness, autojump_clock) -> None:
    async with role_harness(SlowStop, on_stop_timeout=300) as role:
        await role.start()
        began = anyio.current_time()
        assert await role.stop() is False
        assert anyio.current_time() - began == pytest.approx(300)
        assert role.log[-1] == "WARNING on_stop did not finish within 300 s: ending the process anyway"


class Recycler(RoleEntryPoint):
    async def run(self) -> None:
        await anyio.sleep(15 * 60)
        RoleEnvironment.request_recycle()
        await anyio.sleep_forever()


async def test_request_recycle_is_observed_and_the_role_stops_itself(role_harness, autojump_clock) -> None:
    async with role_harness(Recycler) as role:
        await role.start()
        assert not role.recycle_requested
        assert await role.wait_for_recycle() == "request_recycle() was called"
        assert role.recycle_requested
        assert anyio.current_time() == pytest.approx(15 * 60)
        assert [phase for phase, _ in role.reports] == ["starting", "ready", "recycling"]
        assert role.phase == "stopped"
        assert await role.stop() is True  # already stopped: nothing more to do


class Refuses(RoleEntryPoint):
    async def on_start(self) -> bool:
        return False


async def test_on_start_answering_false_is_returned_not_raised(role_harness) -> None:
    async with role_harness(Refuses) as role:
        assert await role.start() is False
        assert role.reports[-1] == ("failed", "on_start returned False")


class Answers(RoleEntryPoint):
    answer: object = "yes"

    async def on_start(self) -> bool:
        return self.answer  # type: ignore[return-value]


class ForgetsAwait(RoleEntryPoint):
    async def on_start(self) -> bool:
        return self.connect()  # type: ignore[return-value]  # the mistake: no await

    async def connect(self) -> bool:
        return True


class ReadsUndeclared(RoleEntryPoint):
    async def on_start(self) -> bool:
        RoleEnvironment.get_config_setting("ConnectionString")
        return True


@pytest.mark.parametrize(
    ("entry_point", "message"),
    [
        (
            Answers,
            "on_start returned 'yes' (a str), not a bool: return True to start the role or False to fail its start",
        ),
        (
            ForgetsAwait,
            "on_start returned a coroutine, not a bool: await it inside on_start and return True or False",
        ),
        (
            ReadsUndeclared,
            "on_start raised RoleEnvironmentError: no configuration setting named 'ConnectionString'; "
            "known settings: Greeting (declare it under ConfigurationSettings in the service definition "
            "and configuration)",
        ),
    ],
)
async def test_mistakes_in_a_role_fail_with_the_fabrics_message(
    role_harness, entry_point: type[RoleEntryPoint], message: str
) -> None:
    async with role_harness(entry_point, settings={"Greeting": "hi"}) as role:
        with pytest.raises(RoleFailed) as failed:
            await role.start()
    assert str(failed.value) == message
    if entry_point is ReadsUndeclared:  # the role's own exception, with its traceback
        assert isinstance(failed.value.__cause__, RoleEnvironmentError)


async def test_a_folder_without_an_entry_point_fails_as_on_the_fabric(role_harness) -> None:
    async with role_harness(FIXTURES / "no_entry") as role:
        with pytest.raises(RoleFailed) as failed:
            await role.start()
    assert str(failed.value) == (
        f"no RoleEntryPoint subclass in any .py file of {FIXTURES / 'no_entry'}; define one there "
        "or name the entry module in the service definition"
    )


async def test_a_web_role_without_an_entry_point_gets_the_default_one(role_harness) -> None:
    async with role_harness(FIXTURES / "no_entry", kind="web") as role:
        assert await role.start()
        assert type(role.entry) is RoleEntryPoint


def test_bad_arguments_are_refused_before_anything_runs(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"^<class 'object'> is not a RoleEntryPoint subclass"):
        role_spec(object, root=tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^index must be between 0 and 1 \(instances=2\), not 2$"):
        role_spec(Greeter, root=tmp_path, instances=2, index=2)
    with pytest.raises(ValueError, match=r"^endpoint WorkerRole/In has protocol 'ftp'; use one of"):
        role_spec(Greeter, root=tmp_path, endpoints={"In": "ftp"})
    with pytest.raises(ValueError, match=r"^local storage 'Scratch' must be 1 to 1048576 MB, not 0$"):
        role_spec(Greeter, root=tmp_path, local_storage={"Scratch": 0})


class FailsLater(RoleEntryPoint):
    async def run(self) -> None:
        await anyio.sleep(30)
        raise ValueError("bad message in queue")


async def test_a_failure_nobody_asked_about_fails_the_block(role_harness, autojump_clock) -> None:
    with pytest.raises(RoleFailed, match=r"^run raised ValueError: bad message in queue$") as failed:
        async with role_harness(FailsLater) as role:
            await role.start()
            await anyio.sleep(60)
    assert isinstance(failed.value.__cause__, ValueError)


async def test_one_harness_at_a_time(role_harness) -> None:
    async with role_harness(Greeter, **greeter()):
        with pytest.raises(RuntimeError, match="RoleEnvironment is already in use"):
            async with role_harness(Greeter, **greeter()):
                pass


class PlainWorker(RoleEntryPoint):
    """Plain def methods: each runs in a thread, and may block."""

    def on_start(self) -> bool:
        self.threads = {threading.current_thread().name}
        self.stopped = threading.Event()
        RoleEnvironment.status_check.subscribe(self.check)
        return True

    def run(self) -> None:
        self.threads.add(threading.current_thread().name)
        self.stopped.wait(30)

    def on_stop(self) -> None:
        time.sleep(0.2)  # real work, in real time
        self.stopped.set()

    def check(self, args) -> None:
        args.set_busy()


async def test_plain_def_methods_run_in_threads_and_are_not_cut_by_the_autojump_clock(
    role_harness, autojump_clock: trio.testing.MockClock
) -> None:
    # Without the harness's guard the clock would jump to on_stop's limit while on_stop sleeps.
    async with role_harness(PlainWorker, on_stop_timeout=60) as role:
        assert await role.start()
        assert await role.status_check() is True
        assert await role.stop() is True
        entry = role.entry
        assert isinstance(entry, PlainWorker) and entry.stopped.is_set()
        assert entry.threads == {"on_start", "run"}
    assert autojump_clock.autojump_threshold == 0  # virtual time again once the threads are done


async def scenario_on_any_backend(root: Path) -> list[str]:
    """Both kinds of role, on whatever backend runs this."""
    seen = []
    async with open_role(Greeter, root=root / "a", **greeter()) as role:
        seen.append(str(await role.start()))
        seen.append(str(await role.change_settings({"Greeting": "hi"})))
        seen.append(str(await role.stop()))
    async with open_role(PlainWorker, root=root / "b", on_stop_timeout=60) as role:
        seen.append(str(await role.start()))
        seen.append(str(await role.status_check()))
        seen.append(str(await role.stop()))
    return seen


def test_the_harness_runs_on_asyncio(tmp_path: Path) -> None:
    seen = anyio.run(scenario_on_any_backend, tmp_path, backend="asyncio")
    changed = "ChangeResult(changes=[Change(kind='setting', name='Greeting')], cancelled=False)"
    assert seen == ["True", changed, "True", "True", "True", "True"]


async def test_the_fabric_test_role_runs_from_its_folder(role_harness, tmp_path: Path) -> None:
    # tests/roles/fixtures/worker is the role the real-process host tests run.
    settings = {
        "MarkerDir": str(tmp_path),
        "OnStart": "true",
        "Run": "return",
        "OnStop": "ok",
        "Greeting": "hi",
    }
    async with role_harness(FIXTURES / "worker", settings=settings) as role:
        assert await role.start()
        assert await role.wait_for_recycle() == "run returned"
    events = (tmp_path / "events.log").read_text().splitlines()
    assert events == ["on_start", "run", "stopping", "on_stop", "on_stop done"]
