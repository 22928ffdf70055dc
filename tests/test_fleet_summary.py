"""Tests of the fleet's summary and progress: what a user reads while and after a fleet runs.

``FleetSummary``'s exit code per command and its table of failures; the progress bar on a
terminal, the log lines otherwise, and which of them ``progress_for`` picks. No model
directories: the results are made up.
"""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from estimator_fix import fleet
from estimator_fix.cli.progress import LogProgress, TerminalProgress, progress_for

# --- summary and progress ---------------------------------------------------------------------


def _summary(**changes: Any) -> fleet.FleetSummary:
    base: dict[str, Any] = {
        "command": "scan",
        "total": 3,
        "done": 3,
        "failed": 0,
        "skipped": 0,
        "by_verdict": {},
        "by_exit_code": {0: 3},
        "seconds": 1.5,
        "dirs_per_second": 2.0,
        "workers": 2,
        "worker_restarts": 0,
    }
    return fleet.FleetSummary(**{**base, **changes})


@pytest.mark.parametrize(
    ("changes", "exit_code"),
    [
        pytest.param({"by_verdict": {"healthy": 3}}, 0, id="scan-healthy"),
        pytest.param({"by_verdict": {"healthy": 2, "repairable": 1}}, 3, id="scan-repairable"),
        pytest.param({"by_verdict": {"repairable": 2, "unrepairable": 1}}, 4, id="scan-worst"),
        pytest.param({"by_verdict": {"repairable": 3}, "failed": 1}, 9, id="scan-failed"),
        pytest.param({"command": "repair", "by_verdict": {"repairable": 3}}, 0, id="repair"),
        pytest.param({"command": "fix", "failed": 1}, 9, id="fix-failed"),
    ],
)
def test_summary_exit_code(changes: dict[str, Any], exit_code: int) -> None:
    summary = _summary(**changes)
    assert summary.exit_code == exit_code
    assert summary.to_dict()["exit_code"] == exit_code
    json.dumps(summary.to_dict())


def test_summary_table_lists_failures() -> None:
    failures = tuple(f"/m/d{i}: broken" for i in range(12))
    table = _summary(failed=12, failures=failures, by_exit_code={1: 12}).table()
    assert "  /m/d9: broken" in table and "/m/d10" not in table
    assert "... and 2 more (see the results file)" in table
    assert table.splitlines()[1] == f"  {'status':<16}{'count':>8}"


def _result(status: str, name: str = "/m/a") -> dict[str, Any]:
    error = None if status == "done" else {"type": "X", "message": f"{name}: broken", "path": None}
    return {"model_dir": name, "line": None, "status": status, "error": error}


def test_terminal_progress() -> None:
    out = io.StringIO()
    bar = TerminalProgress(out, width=10, min_interval=0.0)
    bar(1, 4, _result("done"))
    bar(2, 4, _result("failed", "/m/b"))
    bar(4, 4, _result("done"))
    text = out.getvalue()
    assert "[##........] 1/4 25%" in text
    assert "failed: /m/b: broken\n" in text
    assert "[##########] 4/4 100% 1 failed" in text and text.endswith("\n")


def test_log_progress(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="absl")
    log = LogProgress(interval_seconds=3600, percent_step=50)
    for i in range(1, 11):
        log(i, 10, _result("failed" if i == 3 else "done"))
    lines = [r.getMessage() for r in caplog.records]
    assert "fleet: failed: /m/a: broken" in lines
    progress = [m for m in lines if "directories" in m]
    assert progress[0].startswith("fleet: 5/10 directories (50%), 1 failed")
    assert progress[-1].startswith("fleet: 10/10 directories (100%)") and len(progress) == 2


def test_progress_for_picks_by_tty() -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert isinstance(progress_for(Tty()), TerminalProgress)
    assert isinstance(progress_for(io.StringIO()), LogProgress)
    assert fleet.default_workers() >= 1
