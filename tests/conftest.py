"""Test-wide settings: the tests folder is importable (cases.py, shared tiny settings)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
