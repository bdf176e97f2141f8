"""The package type-checks with mypy, strict (``[tool.mypy]`` in pyproject.toml), with every
test run: the wheel ships ``py.typed``, so its annotations are a promise to hosts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-incremental"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Success: no issues found" in result.stdout, result.stdout


def test_the_hookspecs_seen_by_mypy_are_the_shipped_ones() -> None:
    """mypy finds ``opencrm_horscompte.hookspecs`` through a symlink to ``hookspecs/``."""
    link = ROOT / "opencrm_horscompte" / "hookspecs"
    assert link.is_symlink() and link.resolve() == (ROOT / "hookspecs").resolve()
