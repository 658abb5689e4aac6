"""The core modules type-check under ``mypy --strict`` (the files and settings are
pyproject's ``[tool.mypy]``), so that the README's test command runs the check too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mypy")

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(600)
def test_the_core_modules_type_check_strictly(tmp_path: Path) -> None:
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "mypy-cache")],
        cwd=REPO, capture_output=True, text=True, timeout=600)
    assert checked.returncode == 0, checked.stdout[-8000:] + checked.stderr[-2000:]
    assert "Success: no issues found" in checked.stdout


def test_the_package_says_it_is_typed() -> None:
    assert (REPO / "nbqueue" / "py.typed").is_file()
