"""Shared fixtures: frozen model directories from testdata/, always copied, never modified."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "testdata"


def manifest() -> dict[str, dict]:
    return json.loads((TESTDATA / "MANIFEST.json").read_text())


@pytest.fixture
def model_copy(tmp_path: Path) -> Callable[[str], Path]:
    """Copies a testdata fixture into tmp_path and returns the copy's path."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(TESTDATA / name, dst)
        return dst

    return copy


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the real CLI as a separate process."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "estimator_fix", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=300,
    )


def tree_digest(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``path`` with its size and content: for byte-identity checks."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (p.stat().st_size, p.read_bytes())
    return out
