"""The API client and the command line import only what they use: the wire messages and httpx,
not the controller, front end, chaos or portal behind the API (every `fabric` call paid ~0.45 s
of CPU for them), and a command's implementation only when that command runs."""

from __future__ import annotations

import json
import subprocess
import sys

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
