"""Make the chaos test kit importable by name."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).parent)
if HERE not in sys.path:
    sys.path.append(HERE)  # appended: other folders import their own helpers by name
