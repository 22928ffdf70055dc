"""Tests of the fleet's results journal: what ``--resume`` reads back and skips.

A journal torn by a crash mid-line is read up to the tear and appended to; dry runs and other
commands are not taken as done; a journal that cannot be opened (and ``--workers=0``) is a
usage error before anything runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from estimator_fix import errors, fleet
from estimator_fix.options import Job
from tests.conftest import _mix


def test_resume_reads_a_torn_journal(tmp_path: Path) -> None:
    root = _mix(tmp_path / "m", ("dnn_classifier", "missing_step"))
    results = tmp_path / "results.jsonl"
    jobs = [Job("scan", str(root / n)) for n in ("dnn_classifier", "missing_step")]
    fleet.run_fleet(jobs[:1], workers=1, results_path=str(results), resume=False)
    with results.open("a") as f:
        f.write('{"schema": "estimator-fix.result/1", "model_dir": "')  # a crash mid-line

    summary = fleet.run_fleet(jobs, workers=1, results_path=str(results), resume=True)

    assert (summary.skipped, summary.done) == (1, 1)
    lines = results.read_text().splitlines()
    assert len(lines) == 3 and lines[1].endswith('"model_dir": "')
    assert json.loads(lines[2])["model_dir"] == str(root / "missing_step")
    assert [r["model_dir"] for r in fleet.read_results(str(results))] == [
        str(root / "dnn_classifier"),
        str(root / "missing_step"),
    ]


def test_resume_ignores_dry_runs_and_other_commands(tmp_path: Path) -> None:
    root = _mix(tmp_path / "m", ("missing_step",))
    results = tmp_path / "results.jsonl"
    d = str(root / "missing_step")
    fleet.run_fleet([Job("scan", d)], workers=1, results_path=str(results), resume=False)
    fleet.run_fleet(
        [Job("repair", d, dry_run=True)], workers=1, results_path=str(results), resume=True
    )
    summary = fleet.run_fleet(
        [Job("repair", d, dry_run=True)], workers=1, results_path=str(results), resume=True
    )
    assert (summary.skipped, summary.done) == (0, 1)


def test_unwritable_results_file_is_a_usage_error(tmp_path: Path) -> None:
    root = _mix(tmp_path / "m", ("dnn_classifier",))
    with pytest.raises(errors.UsageError, match="cannot open for appending"):
        fleet.run_fleet(
            [Job("scan", str(root / "dnn_classifier"))],
            workers=1,
            results_path=str(tmp_path / "no" / "such" / "dir" / "results.jsonl"),
            resume=False,
        )
    with pytest.raises(errors.UsageError, match="--workers=0"):
        fleet.run_fleet([], workers=0, results_path=None, resume=False)
