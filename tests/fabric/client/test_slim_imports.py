"""The API client and the command line import only what they use: the wire messages and httpx,
not the controller, front end, chaos or portal behind the API (every `fabric` call paid ~0.45 s
of CPU for them), and a command's implementation only when that command runs."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.paths import ROOT

#: packages of the fabric's implementation: a client loads none of their modules...
SERVER_SIDE = (
    "fabric.controller.",
    "fabric.frontend.",
    "fabric.chaos",
    "fabric.portal",
    "fabric.network.",
    "fabric.host.",
    "fabric.guest.",
    "fabric.cluster",
    "fabric.replica",
    "fabric.server",
    "fabric.commands.run",
    "fabric.commands.chaos",
    "fabric.commands.certs",
    "cryptography",
    "prometheus_client",
)
#: ...but these: the messages and views that cross the wire (msgspec structs), and where the
#: API's address and token are read
WIRE = {
    "fabric.controller.chaos",  # the package: it imports nothing itself
    "fabric.controller.messages",
    "fabric.controller.events",
    "fabric.controller.chaos.messages",
    "fabric.frontend.api",
    "fabric.frontend.auth",
    "fabric.network._errors",
    "fabric.network.toxics",
    "fabric.host.messages",
    "fabric.guest.messages",
    "fabric.guest.log_files",
    "fabric.cluster",  # the package: it imports nothing itself
    "fabric.cluster.tokens",  # the token views (its store loads the CA only to write)
}


def loaded_by(code: str) -> list[str]:
    """The server-side modules a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout
    modules = json.loads(out.splitlines()[-1])
    return [m for m in modules if m.startswith(SERVER_SIDE) and m not in WIRE]


@pytest.mark.parametrize(
    "code",
    [
        "import fabric.client",
        "import fabric.client.deployments",
        "import fabric.cli",
        # the group resolves only the command that runs (status: fabric.commands.client)
        "from fabric.cli import main\nmain(['status', '--help'], standalone_mode=False)",
        "from fabric.cli import main\nmain(['hosts', '--help'], standalone_mode=False)",
    ],
)
def test_client_and_cli_load_no_server_side_module(code: str) -> None:
    """Importing the client or running a client command loads none of the fabric's
    implementation (a regression names the modules that came back)."""
    assert loaded_by(code) == []


@pytest.fixture
def unanswered_state(tmp_path: Path) -> Iterator[Path]:
    """A state folder naming an API at a bound port that listens to nothing: a command goes as
    far as its first request, which is refused."""
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        state = tmp_path / "state"
        state.mkdir()
        (state / "api").write_text(f"http://127.0.0.1:{bound.getsockname()[1]}\n")
        (state / "token").write_text("not-a-token\n")
        yield state


@pytest.mark.parametrize(
    "args",
    [
        ["cert", "--help"],
        ["cert", "list", "hello"],
        ["cert", "delete", "hello", "ab12"],
        ["token", "--help"],
        ["token", "create"],
        ["token", "list"],
        ["exec", "--help"],
        ["exec", "Hello_IN_0", "--service", "hello", "--slot", "production", "true"],
    ],
)
def test_cert_token_and_exec_load_no_cryptography(args: list[str], unanswered_state: Path) -> None:
    """`fabric cert|token|exec` load cryptography (~0.1 s) only to read or make a certificate
    (`cert add`, `cert create-self-signed`), nor the handlers behind their routes."""
    if "--help" not in args:
        args = [*args, "--state-dir", str(unanswered_state)]
    code = f"from fabric.cli import main\ntry:\n    main({args!r}, standalone_mode=False)\nexcept Exception:\n    pass"
    assert [m for m in loaded_by(code) if m != "fabric.commands.certs"] == []  # (its own module)


@pytest.mark.parametrize(
    "call",
    [
        "c.exec('hello', 'production', 'Hello_IN_0', ['true'])",
        "c.tokens()",
        "c.create_token(60.0)",
        "c.certificates('hello')",
        "c.certificate('hello', 'ab12')",
    ],
)
def test_the_client_loads_no_cryptography_for_tokens_certificates_and_exec(
    call: str, unanswered_state: Path
) -> None:
    """The client's own methods (what `fabric exec` calls once it found the instance)."""
    code = (
        "import anyio\nfrom fabric.client import AsyncFabricClient\n"
        f"c = AsyncFabricClient({str(unanswered_state)!r})\n"
        f"async def go():\n    try:\n        await {call}\n    except Exception:\n        pass\n"
        "anyio.run(go)"
    )
    assert loaded_by(code) == []


def test_the_api_bounds_a_remote_command_as_the_agent_does() -> None:
    from fabric.frontend.api import MAX_EXEC_TIMEOUT
    from fabric.guest.plugin_agents.remote_exec import MAX_TIMEOUT

    assert MAX_EXEC_TIMEOUT == MAX_TIMEOUT
