"""Where the repository's folders are, for tests that read examples or run the CLI from the top."""

from __future__ import annotations

from pathlib import Path

#: the repository's top folder (it holds pyproject.toml)
ROOT = Path(__file__).resolve().parents[1]
#: the sample services
EXAMPLES = ROOT / "examples"
