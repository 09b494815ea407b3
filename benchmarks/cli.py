"""What a `fabric` command costs before it does anything: the wall and CPU time of a fresh
interpreter importing the CLI and running `--help`, beside a bare interpreter (`python -c pass`)
measured in the same rounds, so the figure holds on a loaded machine.

Usage: .venv/bin/python benchmarks/cli.py [--rounds 15] [--before DIR]

``--before DIR``: also run each command in another checkout of the tree (say one made with
``git archive <commit> | tar -x -C DIR``), alternated with this one in every round. Each child's
CPU (user + system) is its own, from wait4. Medians are printed, with the extra time over the
bare interpreter.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: name -> the interpreter's arguments (run with the tree as its working folder: -c and -m put
#: that folder first on sys.path, so a --before tree is the one imported)
COMMANDS = {
    "python -c pass": ["-c", "pass"],
    "import fabric.client": ["-c", "import fabric.client"],
    "import fabric.cli": ["-c", "import fabric.cli"],
    "fabric --help": ["-m", "fabric.cli", "--help"],
    "fabric status --help": ["-m", "fabric.cli", "status", "--help"],
}


def run_once(args: list[str], tree: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one fresh interpreter running ``args`` in ``tree``."""
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, *args], cwd=tree, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(args)} in {tree} exited {child.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    """Alternate every command (in each tree) for ``--rounds`` rounds and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--before", type=Path, help="another checkout to measure alongside")
    opts = parser.parse_args()
    trees = {"now": ROOT} | ({"before": opts.before.resolve()} if opts.before else {})
    samples: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(opts.rounds):
        for name, args in COMMANDS.items():
            for label, tree in trees.items():
                if name == "python -c pass" and label != "now":
                    continue  # the baseline does not depend on the tree
                samples.setdefault((name, label), []).append(run_once(args, tree))
    load = os.getloadavg()[0]
    print(f"{opts.rounds} rounds, load {load:.1f}, medians (extra over `python -c pass`)")
    base_wall = statistics.median(w for w, _ in samples[("python -c pass", "now")])
    base_cpu = statistics.median(c for _, c in samples[("python -c pass", "now")])
    print(f"{'':32} {'wall ms':>16} {'CPU ms':>16}")
    for (name, label), runs in samples.items():
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        what = name if label == "now" or name == "python -c pass" else f"{name} [{label}]"
        print(
            f"{what:32} {wall * 1e3:7.0f} ({(wall - base_wall) * 1e3:+6.0f}) "
            f"{cpu * 1e3:7.0f} ({(cpu - base_cpu) * 1e3:+6.0f})"
        )


if __name__ == "__main__":
    main()
