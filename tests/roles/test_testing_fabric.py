"""The fabric side of the testing kit: a harness from a service's csdef and cscfg, the same
failure messages as a real role host process, and the fabric_service fixture on a real fabric."""

from __future__ import annotations

import zipfile
from pathlib import Path

import psutil
import pytest

from fabric.model.package import build_package
from fabric.pytest_plugin import _fabric_processes
from fabric.testing import role_spec_from_service
from roles import RoleEnvironment, RoleEnvironmentError
from roles.testing import RoleFailed
from tests.integration.e2e_kit import SERVICES, copy_service
from tests.paths import EXAMPLES
from tests.roles.role_parent import FIXTURES, run_host, worker_config

GUESTBOOK = EXAMPLES / "guestbook"


async def test_a_role_from_its_service_sees_its_configuration_and_topology(role_harness) -> None:
    async with role_harness.from_service(GUESTBOOK, "Worker", index=1) as role:
        assert await role.start()
        assert RoleEnvironment.current_instance.id == "Worker_IN_1"
        assert RoleEnvironment.get_config_setting("MaxEntries") == "100"
        with pytest.raises(RoleEnvironmentError, match="no configuration setting named 'Title'"):
            RoleEnvironment.get_config_setting("Title")  # declared by the Web role, not this one
        roles = RoleEnvironment.roles
        assert {name: [i.id for i in role.instances] for name, role in roles.items()} == {
            "Web": ["Web_IN_0", "Web_IN_1"],
            "Worker": ["Worker_IN_0", "Worker_IN_1"],
        }
        stores = {i.instance_endpoints["Store"].port for i in roles["Worker"].instances}
        assert len(stores) == 2  # each instance on its own free port
        assert role.spec.entry_module == "worker.py"
        assert role.spec.on_stop_timeout == 300.0  # Azure's default, as the fabric's


async def test_a_web_role_from_its_service_gets_its_local_storage(role_harness, tmp_path: Path) -> None:
    async with role_harness.from_service(GUESTBOOK, "Web") as role:
        assert await role.start()
        scratch = RoleEnvironment.get_local_resource("Scratch")
        assert Path(scratch.root_path).is_dir() and tmp_path in Path(scratch.root_path).parents
        assert scratch.maximum_size_mb == 10


def test_bad_service_arguments_say_what_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^the service has no role 'Nope'; its roles are Web, Worker$"):
        role_spec_from_service(GUESTBOOK, "Nope", root=tmp_path)
    with pytest.raises(ValueError, match=r"^role Web has 2 instance"):
        role_spec_from_service(GUESTBOOK, "Web", root=tmp_path, index=2)
    shop = Path(__file__).parents[1] / "fabric" / "model" / "fixtures" / "shop"
    with pytest.raises(
        ValueError, match=r"^role Worker runs a program \('python worker.py'\), not a RoleEntry"
    ):
        role_spec_from_service(shop, "Worker", root=tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_the_harness_fails_with_the_message_a_role_host_process_reports(
    role_harness, tmp_path: Path
) -> None:
    config = worker_config("not_a_bool", tmp_path)
    async with run_host(config) as host:
        await host.exit_reason()
    reported = host.recorder.states[-1]
    assert reported.phase == "failed"
    async with role_harness(FIXTURES / "not_a_bool") as role:
        with pytest.raises(RoleFailed) as failed:
            await role.start()
    assert str(failed.value) == reported.detail
    assert reported.detail.startswith("on_start returned 'yes' (a str), not a bool")


def test_a_services_tests_folder_is_not_packaged(tmp_path: Path) -> None:
    assert (EXAMPLES / "hello-worker" / "tests").is_dir()
    build_package(EXAMPLES / "hello-worker", tmp_path / "hello.cspkg")
    names = zipfile.ZipFile(tmp_path / "hello.cspkg").namelist()
    assert not [n for n in names if "tests" in n.split("/")]
    assert "roles/HelloWorker/worker.py" in names


def descendants() -> set[int]:
    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_fabric_service_deploys_until_ready_and_leaves_nothing_behind(
    fabric_service, tmp_path: Path
) -> None:
    marker = tmp_path / "stopped.txt"
    service = copy_service(SERVICES / "stopmark", tmp_path, replace={"MARKER": str(marker)})
    before = descendants()
    async with fabric_service(service) as deployed:
        [instance] = await deployed.instances()
        assert instance.status == "ReadyRole"
        targets = await deployed.chaos.targets()
        assert [i.id for i in targets.instances] == ["Stopper_IN_0"]
        assert deployed.endpoints == {}  # no input endpoint
        with pytest.raises(KeyError, match="no input endpoint Stopper/In; the service has"):
            deployed.address("Stopper", "In")
        assert deployed.state_dir.is_dir()
        running = descendants() - before  # the fabric's hosts and VMs
        assert running and _fabric_processes() == running  # what the fixture checks at the end
    assert marker.read_text() == "on_stop Stopper_IN_0\n"  # deleted gracefully: on_stop ran
    assert descendants() <= before


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_fabric_service_names_the_statuses_of_a_service_that_never_gets_ready(
    fabric_service, tmp_path: Path
) -> None:
    service = copy_service(SERVICES / "stopmark", tmp_path)
    (service / "Stopper" / "stopper.py").write_text("from roles import RoleEntryPoint\n")
    before = descendants()
    with pytest.raises(TimeoutError, match=r"^stopmark not Ready within 3 s: Stopper_IN_0 "):
        async with fabric_service(service, ready_timeout=3):
            pass
    assert descendants() <= before
