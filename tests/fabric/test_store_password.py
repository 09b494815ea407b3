"""A database password never goes on a command line: `fabric serve --store` with one in its URL
is refused (every process of the machine reads command lines, the VMs' limited roles too), and
the refusal does not quote it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FABRIC = str(Path(sys.executable).with_name("fabric"))


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://fabric:s3cret@127.0.0.1:1/fabric",
        "postgres://fabric:s3cret@127.0.0.1:notaport/",
        "postgresql://127.0.0.1:1/fabric?user=fabric&password=s3cret",
    ],
)
@pytest.mark.timeout(60)
def test_a_password_in_the_store_url_is_refused_without_quoting_it(tmp_path: Path, url: str) -> None:
    done = subprocess.run(
        [FABRIC, "serve", "--store", url, "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        timeout=50,
    )
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "PGPASSWORD" in err and "s3cret" not in err + done.stdout.decode(), err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "state" / "token").exists()  # nothing started
