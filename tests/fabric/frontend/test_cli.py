"""The client commands against a real served API (in-process, and through a `fabric` process)."""

from __future__ import annotations

import json
import signal
import socket
import sys
import traceback
from pathlib import Path

import anyio
import msgspec
import pytest
from click.testing import CliRunner

from fabric.cli import main
from fabric.model import build_package
from tests.fabric.frontend.frontend_kit import Api
from tests.fabric.frontend.frontend_standin import Finish

FABRIC = Path(sys.executable).parent / "fabric"


async def cli(*args: str) -> tuple[int, str, str]:
    """Run a `fabric` command in a worker thread (the API it talks to runs on this event loop)."""

    def run() -> tuple[int, str, str]:
        result = CliRunner().invoke(main, list(args))
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            assert result.exc_info is not None
            raise AssertionError("".join(traceback.format_exception(*result.exc_info)))
        return result.exit_code, result.stdout, result.stderr

    return await anyio.to_thread.run_sync(run)


def no_fabric(state: Path) -> str:
    return f"error: no fabric is running for state folder {state}: start one with `fabric serve` or `fabric run`\n"


@pytest.mark.parametrize(
    "command",
    [["status"], ["deploy", "SERVICE"], ["suspend"], ["reboot", "Hello_IN_0"], ["swap"], ["walk", "1"]],
)
async def test_no_fabric_running(tmp_path: Path, hello: Path, command: list[str]) -> None:
    state = tmp_path / "state"
    args = [str(hello) if a == "SERVICE" else a for a in command]
    assert await cli(*args, "--state-dir", str(state)) == (2, "", no_fabric(state))
    # A fabric that died without cleaning up: the address file names a port nobody listens on.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state.mkdir()
    (state / "api").write_text(f"http://127.0.0.1:{port}\n")
    (state / "token").write_text("stale\n")
    assert await cli(*args, "--state-dir", str(state)) == (2, "", no_fabric(state))


async def test_the_client_commands_drive_a_served_fabric(api: Api, hello: Path, tmp_path: Path) -> None:
    s = ("--state-dir", str(api.state))
    code, out, err = await cli("deploy", str(hello), *s)
    assert code == 0, err
    assert out.startswith("hello/production hello-") and out.endswith(": Running, 2/2 instances ready\n")

    code, out, err = await cli("status", "--json", *s)
    assert code == 0, err
    [view] = json.loads(out)["deployments"]
    assert (view["service"], view["slot"], view["status"], view["roles"]) == (
        "hello",
        "production",
        "Running",
        {"Hello": 2},
    )
    instance = view["instances"][0]
    assert {"id", "status", "host", "update_domain", "fault_domain", "restarts"} <= set(instance)
    assert view["endpoints"][0]["host"] == "127.0.0.1"

    code, out, _ = await cli("status", *s)
    assert "Hello_IN_1" in out and "ReadyRole" in out and "endpoint Hello/Http http://127.0.0.1:" in out

    bigger = tmp_path / "bigger.cscfg"
    bigger.write_text(
        (hello / "ServiceConfiguration.Local.cscfg").read_text().replace('count="2"', 'count="3"')
    )
    assert (await cli("config", str(bigger), *s))[1].endswith("3/3 instances ready\n")
    for args in (
        ["upgrade", str(hello), "--mode", "Manual"],
        ["walk", "0"],
        ["reboot", "Hello_IN_0"],
        ["reimage", "Hello_IN_2"],
    ):
        code, out, err = await cli(*args, *s)
        assert code == 0, (args, err)
    assert "Suspended" in (await cli("suspend", *s))[1]
    assert "Running" in (await cli("resume", *s))[1]

    code, _, err = await cli("reboot", "Nope_IN_0", *s)
    assert code == 2 and err == "error: no role instance 'Nope_IN_0'; `fabric status` lists them\n"
    code, _, err = await cli("deploy", str(hello), *s)
    assert code == 2 and len(err.splitlines()) == 1 and "(ConflictError)" in err

    package = tmp_path / "hello.cspkg"
    build_package(hello, package)
    code, out, err = await cli("deploy", str(package), "--slot", "staging", "--name", "next", "--no-wait", *s)
    assert code == 0 and "accepted, request id" in out, err
    assert (await cli("swap", *s))[0] == 0
    deployments = json.loads((await cli("status", "--json", *s))[1])["deployments"]
    assert {d["slot"]: d["name"] for d in deployments}["production"] == "next"
    assert (await cli("delete", "--slot", "staging", *s))[1] == "delete hello staging: done\n"
    assert len(json.loads((await cli("status", "--json", *s))[1])["deployments"]) == 1


async def test_a_failed_operation_is_one_line_and_exit_2(slow_api: Api, hello_package: bytes) -> None:
    api = slow_api
    await api.create_service()
    rid = (await api.deploy(hello_package)).headers["x-ms-request-id"]
    await api.controller_ref.ask(Finish(request_id=rid))

    async with anyio.create_task_group() as tg:

        async def fail_the_suspend() -> None:
            with anyio.fail_after(10):
                while not (
                    pending := [o for o in api.controller.operations.values() if o.status == "InProgress"]
                ):
                    await anyio.sleep(0.01)
            await api.controller_ref.ask(
                Finish(
                    request_id=pending[0].request_id,
                    error_code="RoleStopFailed",
                    error_message="on_stop hung",
                )
            )

        tg.start_soon(fail_the_suspend)
        code, out, err = await cli("suspend", "--state-dir", str(api.state))
    assert (code, out) == (2, "")
    assert err == "error: suspend hello production failed: on_stop hung (RoleStopFailed)\n"


def make_vm(state: Path, instance: str) -> Path:
    vm = state / "vms" / instance
    (vm / "C" / "Logs").mkdir(parents=True)
    (vm / "C" / "Logs" / "WaAppAgent.log").write_text("heartbeat 1\nheartbeat 2\n")
    store = vm / "C" / "Resources" / "Directory" / "abc.Hello.DiagnosticStore"
    store.mkdir(parents=True)
    (store / "WaHostBootstrapper.log").write_text("startup tasks done\n")
    return vm


async def test_logs_reads_the_vm_disk(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_vm(state, "Hello_IN_0")
    s = ("--state-dir", str(state))
    assert await cli("logs", "Hello_IN_0", *s) == (0, "heartbeat 1\nheartbeat 2\n", "")
    assert (await cli("logs", "Hello_IN_0", "--file", "WaHostBootstrapper", *s))[1] == "startup tasks done\n"
    code, _, err = await cli("logs", "Hello_IN_0", "--file", "WaIISHost", *s)
    assert code == 2 and "has no WaIISHost.log yet" in err
    code, _, err = await cli("logs", "Nope_IN_0", *s)
    assert code == 2 and err.endswith("VMs there: Hello_IN_0\n")
    code, _, err = await cli("logs", "Hello_IN_0", "--file", "Nope", *s)
    assert code == 2  # click refuses the choice
    # The controller names VM folders <service>.<deployment>.<instance>: the instance id finds it.
    make_vm(state, "hello.d1.Hello_IN_1")
    assert (await cli("logs", "Hello_IN_1", *s))[1] == "heartbeat 1\nheartbeat 2\n"
    make_vm(state, "hello.d2.Hello_IN_1")
    code, _, err = await cli("logs", "Hello_IN_1", *s)
    assert code == 2 and "several VMs match 'Hello_IN_1'" in err
    assert (await cli("logs", "hello.d2.Hello_IN_1", *s))[0] == 0


@pytest.mark.timeout(30)
async def test_status_through_a_real_fabric_process(api: Api, hello_package: bytes) -> None:
    await api.create_service()
    await api.deploy(hello_package)
    done = await anyio.run_process(
        [str(FABRIC), "status", "--json", "--state-dir", str(api.state)], check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    [view] = json.loads(done.stdout)["deployments"]
    assert view["name"] == "d1" and len(view["instances"]) == 2


@pytest.mark.timeout(30)
async def test_logs_follow_in_a_real_process_until_ctrl_c(tmp_path: Path) -> None:
    state = tmp_path / "state"
    vm = make_vm(state, "Hello_IN_0")
    log = vm / "C" / "Logs" / "WaAppAgent.log"
    command = [str(FABRIC), "logs", "Hello_IN_0", "--follow", "--state-dir", str(state)]
    async with await anyio.open_process(command) as proc:
        assert proc.stdout is not None
        seen = b""

        async def read_until(text: bytes) -> None:
            nonlocal seen
            with anyio.fail_after(10):
                while text not in seen:
                    seen += await proc.stdout.receive()  # type: ignore[union-attr]

        await read_until(b"heartbeat 2\n")
        with log.open("a") as f:
            f.write("heartbeat 3\n")
        await read_until(b"heartbeat 3\n")
        proc.send_signal(signal.SIGINT)
        with anyio.fail_after(10):
            assert await proc.wait() == 0


def make_role_logs(vm: Path) -> None:
    """The logs a worker role's VM has besides the agents': its role host's, its output, a
    startup task's and an access log."""
    directory = vm / "C" / "Resources" / "Directory"
    (directory / "abc.Hello").mkdir(parents=True)
    (directory / "abc.Hello" / "WaWorkerHost.log").write_text("on_start returned True\n")
    (directory / "abc.Hello" / "WaWorkerHost.out.log").write_text("hello (beat 1)\n")
    (directory / "abc.Hello.DiagnosticStore" / "StartupTasks").mkdir(parents=True)
    (directory / "abc.Hello.DiagnosticStore" / "StartupTasks" / "0.log").write_text("installed\n")
    w3svc = directory / "abc.Hello.DiagnosticStore" / "LogFiles" / "W3SVC1"
    w3svc.mkdir(parents=True)
    (w3svc / "u_ex261206.log").write_text("GET / 200\n")


async def test_logs_offers_every_log_of_a_vm_by_a_short_name(tmp_path: Path) -> None:
    state = tmp_path / "state"
    make_role_logs(make_vm(state, "hello.d1.Hello_IN_0"))
    s = ("--state-dir", str(state))
    code, out, err = await cli("logs", "Hello_IN_0", "--list", *s)
    assert code == 0, err
    names = [line.split()[0] for line in out.splitlines()]
    for name in ("WaAppAgent", "WaHostBootstrapper", "WaWorkerHost", "stdout", "StartupTask0", "W3SVC"):
        assert name in names, out
    assert (await cli("logs", "Hello_IN_0", "--file", "stdout", *s))[1] == "hello (beat 1)\n"
    assert (await cli("logs", "Hello_IN_0", "--file", "StartupTask0", *s))[1] == "installed\n"
    assert (await cli("logs", "Hello_IN_0", "--file", "w3svc", *s))[1] == "GET / 200\n"
    code, _, err = await cli("logs", "Hello_IN_0", "--file", "WaIISHost", *s)
    assert code == 2 and "its logs: " in err and "StartupTask0" in err and len(err.splitlines()) == 1
    code, _, err = await cli("logs", "../../..", *s)
    assert code == 2 and err == "error: '../../..' is not an instance id (Web_IN_0) or a VM folder name\n"


async def test_logs_takes_service_and_slot_like_the_other_instance_commands(api: Api, hello: Path) -> None:
    state = api.state
    s = ("--state-dir", str(state))
    for vm in ("hello.d1.Hello_IN_0", "hello.d0.Hello_IN_0", "other.d2.Hello_IN_0"):
        (make_vm(state, vm) / "C" / "Logs" / "WaAppAgent.log").write_text(f"{vm}\n")
    code, _, err = await cli("logs", "Hello_IN_0", *s)
    assert code == 2 and "several VMs match 'Hello_IN_0'" in err
    assert (await cli("logs", "Hello_IN_0", "--service", "other", *s))[1] == "other.d2.Hello_IN_0\n"
    # The running fabric says which deployment the slot holds: d1 (d0 is an old one's VM).
    assert (await cli("deploy", str(hello), "--name", "d1", *s))[0] == 0
    assert (await cli("logs", "Hello_IN_0", "--slot", "production", *s))[1] == "hello.d1.Hello_IN_0\n"
    code, _, err = await cli("logs", "Hello_IN_0", "--slot", "staging", *s)
    assert code == 2 and err.startswith("error: no role instance 'Hello_IN_0'")


async def test_config_takes_the_service_from_the_files_service_name(
    api: Api, hello: Path, tmp_path: Path
) -> None:
    s = ("--state-dir", str(api.state))
    assert (await cli("deploy", str(hello), *s))[0] == 0
    assert (await cli("deploy", str(hello), "--service", "other", *s))[0] == 0
    bigger = tmp_path / "bigger.cscfg"
    bigger.write_text(
        (hello / "ServiceConfiguration.Local.cscfg").read_text().replace('count="2"', 'count="3"')
    )
    code, out, err = await cli("config", str(bigger), *s)
    assert code == 0 and out.startswith("hello/production ") and out.endswith("3/3 instances ready\n"), err
    assert len(api.controller.deployments[("other", "production")].instances) == 2


async def test_status_piped_keeps_one_instance_per_line(api: Api, hello: Path) -> None:
    s = ("--state-dir", str(api.state))
    assert (await cli("deploy", str(hello), *s))[0] == 0
    key = ("hello", "production")
    view = api.controller.deployments[key]
    detail = "waiting for its endpoint Http to accept connections again after a recycle " * 2
    api.controller.deployments[key] = msgspec.structs.replace(
        view, instances=[msgspec.structs.replace(i, detail=detail.strip()) for i in view.instances]
    )
    code, out, err = await cli("status", *s)
    assert code == 0, err
    rows = [line for line in out.splitlines() if "_IN_" in line]
    assert len(rows) == 2 and all(detail.strip() in row and row.rstrip().endswith("0") for row in rows), out


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["logs", "--nope"], "error: No such option '--nope'. (see `fabric logs -h`)"),
        (["nope"], "error: No such command 'nope'. (see `fabric -h`)"),
        (
            ["chaos", "kill", "--target", "nope"],
            "error: Invalid value for '--target': 'nope' is not one of",
        ),
    ],
)
async def test_a_mistake_in_the_command_line_is_one_error_line_and_exit_2(
    args: list[str], error: str
) -> None:
    done = await anyio.run_process([str(FABRIC), *args], check=False)
    err = done.stderr.decode()
    assert (done.returncode, done.stdout) == (2, b"") and err.startswith(error) and len(err.splitlines()) == 1
