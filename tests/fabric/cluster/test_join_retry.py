"""A first `fabric host join` tries again while the controller's join port does not answer
(connection refused, connection dropped), saying so, and joins once it answers; a refusal exits 2
at once with one line; tries stop after --retry-for."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from fabric.cluster.ca import ClusterCA
from fabric.cluster.join import JoinUnreachable
from fabric.cluster.node import Identity, ensure_joined
from fabric.cluster.port import cluster_dir
from fabric.cluster.tokens import TokenStore
from fabric.settings import Settings
from tests.fabric.cluster.test_host_settings import Heard, controller
from tests.integration.test_e2e_cli import Output
from tests.integration.test_e2e_join import FABRIC, free_port_pair, running, stop

pytestmark = [pytest.mark.timeout(120)]

HOST = "127.0.0.1"


async def retried(out: Output, after: int, not_: str) -> str:
    """The first line from line ``after`` on saying the join is tried again, for another reason
    than ``not_`` (a try begun before may still say that)."""
    assert out.process.stdout is not None
    try:
        with anyio.fail_after(30):
            while True:
                for line in out.lines[after:]:
                    if "trying again in" in line and not_ not in line:
                        return line
                out._buffer += await out.process.stdout.receive()  # as Output.wait_for reads
                *complete, out._buffer = out._buffer.split(b"\n")
                out.lines += [c.decode(errors="replace") for c in complete]
    except TimeoutError:
        raise AssertionError("\n".join(["not tried again:", *out.lines[-20:]])) from None


async def test_a_first_join_tries_again_until_the_controller_answers_and_never_when_refused(
    tmp_path: Path,
) -> None:
    state, port = tmp_path / "controller", free_port_pair(HOST)
    ca_hash = ClusterCA.open(cluster_dir(state)).hash
    token, _ = TokenStore(cluster_dir(state)).create(600)
    join = [FABRIC, "host", "join", f"{HOST}:{port}", "--token", token, "--ca-hash", ca_hash, "--cores", "1"]
    host = [*join, "--name", "h1", "--state-dir", str(tmp_path / "h1"), "--retry-for", "90"]
    async with anyio.create_task_group() as tg, running(host) as process:
        out = Output(process)
        # nothing listens at the join port yet: connection refused
        await out.wait_for("All connection attempts failed; trying again in", 30)
        # a join port that drops every connection unanswered
        async with anyio.create_task_group() as dropper:
            dropping = await anyio.create_tcp_listener(local_host=HOST, local_port=port + 1)
            dropper.start_soon(dropping.serve, lambda stream: stream.aclose())
            dropped = await retried(out, len(out.lines), "All connection attempts failed")
            assert f"join port {HOST}:{port + 1}" in dropped, dropped
            dropper.cancel_scope.cancel()
        await dropping.aclose()
        # the controller at last: the host joins and links
        served = await controller(tg, state, Settings.fast(), port, Heard())
        await out.wait_for("host h1 joined", 30)
        assert (tmp_path / "h1" / "identity.pem").exists()

        # a refusal (a bad token) is not tried again: exit 2 at once, one line
        bad = [
            *join[:5],
            "abcdef.0123456789abcdef",
            *join[6:],
            "--name",
            "h2",
            "--state-dir",
            str(tmp_path / "h2"),
        ]
        with anyio.fail_after(30):
            result = await anyio.run_process(bad, check=False)
        err = result.stderr.decode().strip()
        assert result.returncode == 2 and err.startswith("error: ") and "not valid" in err, err
        assert len(err.splitlines()) == 1, err
        await stop(process)  # as Ctrl-C: the host and its agent end
        served.cancel()
        tg.cancel_scope.cancel()


async def test_tries_stop_after_the_time_given(tmp_path: Path) -> None:
    port = free_port_pair(HOST)  # nothing listens there
    began = anyio.current_time()
    with pytest.raises(JoinUnreachable) as unreachable:
        await ensure_joined(
            Identity(tmp_path / "h1"),
            f"{HOST}:{port}",
            token="abcdef.0123456789abcdef",
            ca_hash="sha256:" + "0" * 64,
            name="h1",
            cores=1,
            fault_domain=0,
            patience=1.5,
        )
    assert 1.5 <= anyio.current_time() - began < 10
    assert "times in 1.5 s" in str(unreachable.value) and "\n" not in str(unreachable.value)
