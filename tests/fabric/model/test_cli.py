"""`fabric validate` and `fabric package` as a user runs them: summaries, exit 0 or exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from fabric.cli import main

FABRIC = Path(sys.executable).parent / "fabric"


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_validate_prints_a_one_screen_summary(shop: Path) -> None:
    code, out, err = run("validate", str(shop))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "Shop: 2 roles, 5 instances, 7 endpoints, 4 startup tasks"
    assert "ServiceConfiguration.Local.cscfg" in lines[2]
    assert any(line.startswith("  WebFront  web, 2 sites") and line.endswith("x2") for line in lines)
    assert "Debug per-instance tcp :10000-10100->2222" in out
    assert "startup tasks: simple, background, foreground" in out
    assert len(lines) <= 24
    assert err.strip().endswith("warning: Startup: priority is kept but not acted on here")


def test_validate_with_config_and_other_inputs(shop: Path, shop_toml: Path) -> None:
    code, out, _ = run("validate", str(shop), str(shop / "ServiceConfiguration.Cloud.cscfg"))
    assert code == 0 and out.startswith("Shop: 2 roles, 10 instances")
    assert run("validate", str(shop / "ServiceDefinition.csdef"))[0] == 0
    assert run("validate", str(shop_toml / "service.toml"))[0] == 0
    code, _, err = run("validate", str(shop_toml))
    assert code == 0 and err == ""


def test_validate_reports_every_problem_and_exits_2(shop: Path) -> None:
    path = shop / "ServiceDefinition.csdef"
    path.write_text(
        path.read_text().replace('port="443"', 'port="0"').replace('vmsize="Medium"', 'vmsize="Big"')
    )
    code, out, err = run("validate", str(shop))
    assert code == 2 and out == ""
    assert err.splitlines() == [
        f"{path}:7: WebRole@vmsize: unknown VM size 'Big' "
        "(sizes: ExtraSmall, Small, Medium, Large, ExtraLarge, A5-A11, Standard_*)",
        f"{path}:25: InputEndpoint@port: 0 is out of range; use a number from 1 to 65535",
    ]


def test_validate_strict_fails_on_warnings(shop: Path) -> None:
    code, _, err = run("validate", "--strict", str(shop))
    assert code == 2 and "priority is kept but not acted on here (strict mode)" in err


def test_validate_missing_path_exits_2(tmp_path: Path) -> None:
    code, _, err = run("validate", str(tmp_path / "nowhere"))
    assert code == 2 and "does not exist" in err


def test_package_then_validate_the_package(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "shop.cspkg"
    code, stdout, err = run(
        "package", str(shop), "-o", str(out), "--config", str(shop / "ServiceConfiguration.Cloud.cscfg")
    )
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}: service Shop, 12 files")
    code, stdout, _ = run("validate", str(out))
    assert code == 0 and "10 instances" in stdout.splitlines()[0]


def test_package_errors_exit_2(shop: Path, tmp_path: Path) -> None:
    (shop / "Worker" / "worker.py").unlink()
    (shop / "Worker" / "warm_cache.py").unlink()
    (shop / "Worker" / "watchdog.py").unlink()
    (shop / "Worker" / "setup.sh").unlink()
    (shop / "Worker").rmdir()
    code, _, err = run("package", str(shop), "-o", str(tmp_path / "x.cspkg"))
    assert code == 2 and "role Worker has no code folder" in err
    assert not (tmp_path / "x.cspkg").exists()
    code, _, err = run("package", str(shop))
    assert code == 2 and "Missing option '-o'" in err


def test_real_fabric_process(shop: Path, tmp_path: Path) -> None:
    out = tmp_path / "shop.cspkg"
    done = subprocess.run(
        [str(FABRIC), "package", str(shop), "-o", str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    done = subprocess.run([str(FABRIC), "validate", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("Shop: 2 roles, 5 instances"), done.stderr
    (shop / "ServiceDefinition.csdef").write_bytes(b'<!DOCTYPE x [<!ENTITY a "b">]><x>&a;</x>')
    done = subprocess.run([str(FABRIC), "validate", str(shop)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert (
        done.stderr.strip() == f"{shop / 'ServiceDefinition.csdef'}:1: contains a DTD (<!DOCTYPE ...>); "
        "remove it, DTDs are not allowed"
    )
    assert "Traceback" not in done.stderr
