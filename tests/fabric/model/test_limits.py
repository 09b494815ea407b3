"""Every number a model carries is bounded: a hostile count is one line and exit 2, at once."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric.cli import main
from fabric.model.validate import MAX_INSTANCES
from fabric.settings import Settings
from tests.fabric.model.conftest import Edit

CSDEF = "ServiceDefinition.csdef"
CSCFG = "ServiceConfiguration.Local.cscfg"
WORKER_COUNT = '<Instances count="3" />'
TASK = '<Task commandLine="./setup.sh" taskType="simple" />'
FIXED = '<FixedPort port="5353" />'

# (case, file, old text, new text, what the one error line says)
CASES: list[tuple[str, str, str, str, str]] = [
    (
        "a billion instances",
        CSCFG,
        WORKER_COUNT,
        '<Instances count="1000000000" />',
        "over the limit of 1000",
    ),
    ("10**30 instances", CSCFG, WORKER_COUNT, f'<Instances count="{10**30}" />', "is too large"),
    ("negative instances", CSCFG, WORKER_COUNT, '<Instances count="-5" />', "out of range"),
    ("zero instances", CSCFG, WORKER_COUNT, '<Instances count="0" />', "out of range"),
    ("non-numeric instances", CSCFG, WORKER_COUNT, '<Instances count="lots" />', "is not a whole number"),
    ("float instances", CSCFG, WORKER_COUNT, '<Instances count="1e9" />', "is not a whole number"),
    (
        "instances over the limit together",
        CSCFG,
        '<Instances count="2" />',
        f'<Instances count="{MAX_INSTANCES - 2}" />',
        f"the roles ask for {MAX_INSTANCES + 1} instances together",
    ),
    ("upgrade domains", CSDEF, 'upgradeDomainCount="3"', 'upgradeDomainCount="1000000"', "from 1 to 20"),
    ("no upgrade domain", CSDEF, 'upgradeDomainCount="3"', 'upgradeDomainCount="0"', "from 1 to 20"),
    ("LocalStorage size", CSDEF, 'sizeInMB="1024"', f'sizeInMB="{2**31 - 1}"', "MB of LocalStorage in all"),
    ("LocalStorage beyond xs:int", CSDEF, 'sizeInMB="1024"', f'sizeInMB="{10**30}"', "is too large"),
    ("negative LocalStorage", CSDEF, 'sizeInMB="1024"', 'sizeInMB="-1"', "out of range"),
    ("port", CSDEF, 'port="7000"', 'port="70000"', "from 1 to 65535"),
    ("negative port", CSDEF, 'port="7000"', 'port="-80"', "from 1 to 65535"),
    ("probe interval", CSDEF, 'intervalInSeconds="5"', 'intervalInSeconds="99999999"', "at most 3600"),
    ("probe timeout", CSDEF, 'timeoutInSeconds="11"', 'timeoutInSeconds="99999999"', "at most 3600"),
    ("probe interval too short", CSDEF, 'intervalInSeconds="5"', 'intervalInSeconds="0"', "of at least 5"),
    ("startup tasks", CSDEF, TASK, TASK * 40, "42 startup tasks; at most 32"),
    (
        "fixed ports",
        CSDEF,
        FIXED,
        "".join(f'<FixedPort port="{p}" />' for p in range(5353, 5353 + 40)),
        "40 FixedPort",
    ),
]


def validate(shop: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["validate", str(shop)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(("case", "file", "old", "new", "said"), CASES, ids=[c[0] for c in CASES])
def test_each_number_is_bounded_with_one_line(
    shop: Path, edit: Edit, case: str, file: str, old: str, new: str, said: str
) -> None:
    edit(shop / file, old, new)
    code, out, err = validate(shop)
    assert code == 2 and out == ""
    errors = [line for line in err.splitlines() if "warning:" not in line]
    assert len(errors) == 1, err
    assert said in errors[0], errors[0]


def test_the_setting_and_the_model_share_the_default() -> None:
    assert Settings().max_instances == MAX_INSTANCES == 1000
