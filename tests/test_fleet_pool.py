"""Tests of ``fleet.run_fleet``: many model directories through a pool of worker processes.

Real files throughout: the frozen fixtures are copied into ``tmp_path`` next to directories
that are not model directories (an empty one, a file), and every one gets its line in the
results journal. Scans with one worker and two, the fleet's exit code, repairs run again with
``--resume`` and without, bad manifest lines and directories used twice, and a fix of a whole
manifest. Worker crashes are real too: a user SPEC file whose import calls ``os._exit`` kills
the worker process that loads it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from estimator_fix import errors, fleet
from estimator_fix.options import Job
from tests.conftest import DNN, MIX, TESTDATA, UNREPAIRABLE, _mix


def _results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _by_name(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {Path(r["model_dir"]).name: r for r in results}
    assert len(out) == len(results), "one result per directory"
    return out


def _crash_file(tmp_path: Path) -> Path:
    path = tmp_path / "crash.py"
    path.write_text("import os\n\nos._exit(7)  # what a segfault in native code looks like\n")
    return path


# --- run_fleet --------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_fleet_scan(tmp_path: Path, workers: int) -> None:
    root = _mix(tmp_path / "models")
    results = tmp_path / "results.jsonl"
    jobs = fleet.jobs_for_dirs(fleet.expand_model_dirs(f"{root}/*"), Job("scan", ""))
    seen: list[tuple[int, int]] = []

    summary = fleet.run_fleet(
        jobs,
        workers=workers,
        results_path=str(results),
        resume=False,
        progress=lambda done, total, result: seen.append((done, total)),
    )

    got = _by_name(_results(results))
    assert set(got) == set(MIX)
    for name, ((status, code, verdict), _) in MIX.items():
        r = got[name]
        assert (r["status"], r["exit_code"], r["verdict"]) == (status, code, verdict), name
        assert r["command"] == "scan" and r["changed"] == [] and r["repaired"] is False
    assert got["missing_step"]["problems"] == ["step_missing"]
    assert seen == [(i, len(MIX)) for i in range(1, len(MIX) + 1)]
    assert (summary.total, summary.done, summary.failed, summary.skipped) == (8, 5, 3, 0)
    assert summary.by_verdict == {"healthy": 1, "repairable": 3, "unrepairable": 1}
    assert summary.by_exit_code == {0: 1, 1: 3, 3: 3, 4: 1}
    assert summary.exit_code == errors.EXIT_FLEET_FAILED
    assert summary.workers == workers and summary.worker_restarts == 0
    table = summary.table()
    assert f"  {'failed':<16}{3:>8}" in table and "exit code 9" in table
    assert f"{root / 'empty'}: no checkpoint found" in table


@pytest.mark.parametrize(
    ("names", "exit_code"),
    [
        pytest.param(("dnn_classifier",), 0, id="healthy"),
        pytest.param(("dnn_classifier", "missing_step"), 3, id="repairable"),
        pytest.param(("missing_step", UNREPAIRABLE), 4, id="unrepairable"),
    ],
)
def test_fleet_scan_exit_code(tmp_path: Path, names: tuple[str, ...], exit_code: int) -> None:
    root = _mix(tmp_path / "m", names)
    jobs = [Job("scan", str(root / n)) for n in names]
    summary = fleet.run_fleet(jobs, workers=1, results_path=None, resume=False)
    assert summary.failed == 0 and summary.exit_code == exit_code


def _fixed_indexes(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob("*-fixed*.index"))


def test_fleet_repair_resume_and_retry(tmp_path: Path) -> None:
    root = _mix(tmp_path / "models")
    results = tmp_path / "results.jsonl"
    jobs = fleet.jobs_for_dirs(fleet.expand_model_dirs(f"{root}/*"), Job("repair", ""))

    first = fleet.run_fleet(jobs, workers=2, results_path=str(results), resume=False)

    got = _by_name(_results(results))
    for name, (_, (status, code, error_type)) in MIX.items():
        r = got[name]
        assert (r["status"], r["exit_code"]) == (status, code), name
        assert (r["error"] or {}).get("type") == error_type, name
    for name in ("missing_step", "renamed_step"):
        r = got[name]
        assert r["repaired"] is True and r["step"] == 6 and r["verdict"] == "repairable"
        assert str(root / name / "model.ckpt-fixed-6.index") in r["changed"]
        assert _fixed_indexes(root / name) == ["model.ckpt-fixed-6.index"]
    assert got["dnn_classifier"]["repaired"] is False and got["dnn_classifier"]["changed"] == []
    assert "pass --step" in got["conflicting_step"]["error"]["message"]
    assert (first.done, first.failed, first.exit_code) == (3, 5, errors.EXIT_FLEET_FAILED)

    # --resume: the three done directories are skipped, the five failed ones run again.
    second = fleet.run_fleet(jobs, workers=2, results_path=str(results), resume=True)
    assert (second.total, second.skipped, second.done, second.failed) == (8, 3, 0, 5)
    again = _results(results)[len(MIX) :]
    assert sorted(Path(r["model_dir"]).name for r in again) == sorted(
        n for n, (_, (status, _, _)) in MIX.items() if status == "failed"
    )

    # Without --resume everything runs again: no second repair anywhere.
    third = fleet.run_fleet(jobs, workers=1, results_path=str(results), resume=False)
    assert (third.skipped, third.done, third.failed) == (0, 3, 5)
    retry = _by_name(_results(results)[len(MIX) + 5 :])
    for name in ("missing_step", "renamed_step"):
        r = retry[name]
        assert (r["status"], r["repaired"], r["verdict"], r["changed"]) == (
            "done",
            False,
            "healthy",
            [],
        )
        assert _fixed_indexes(root / name) == ["model.ckpt-fixed-6.index"]


def test_fleet_survives_a_worker_that_dies(tmp_path: Path) -> None:
    names = ("missing_step", "renamed_step", "dnn_classifier")
    root = _mix(tmp_path / "models", names)
    shutil.copytree(TESTDATA / "missing_step", root / "crashing")
    results = tmp_path / "results.jsonl"
    dry = [
        Job("fix", str(root / n), export_dir=str(tmp_path / "e" / n), dry_run=True, **DNN)
        for n in names
    ]
    dying = Job(
        "fix",
        str(root / "crashing"),
        export_dir=str(tmp_path / "e" / "crashing"),
        estimator=DNN["estimator"],
        # Loaded (and so the worker killed) before TensorFlow is imported: a fast test.
        serving_input_fn=f"{_crash_file(tmp_path)}:serving_input_fn",
    )

    summary = fleet.run_fleet(
        [dry[0], dying, dry[1], dry[2]], workers=2, results_path=str(results), resume=False
    )

    got = _by_name(_results(results))
    assert set(got) == {*names, "crashing"}
    assert all(got[n]["status"] == "done" for n in names)
    crashed = got["crashing"]
    assert (crashed["status"], crashed["exit_code"]) == ("failed", 1)
    assert crashed["error"]["type"] == fleet.WORKER_CRASH
    message = crashed["error"]["message"]
    assert "the worker process died" in message
    # The dead worker's exit code is read from the pool when it still knows it (not always:
    # the pool may have reaped its process list by then).
    assert "(exit code" not in message or "(exit code 7)" in message
    # Broken once with the others in flight, once more alone: then it is known to be the one.
    assert (summary.done, summary.failed, summary.worker_restarts) == (3, 1, 2)
    assert summary.exit_code == errors.EXIT_FLEET_FAILED


def test_fleet_bad_lines_and_duplicates(tmp_path: Path) -> None:
    root = _mix(tmp_path / "models", ("missing_step", "dnn_classifier"))
    results = tmp_path / "results.jsonl"
    out = str(tmp_path / "out" / "shared")
    jobs: list[Job | fleet.BadLine] = [
        Job("repair", str(root / "missing_step"), dry_run=True, line=1),
        fleet.BadLine(2, None, "jobs.jsonl:2: not valid JSON (column 3: x)", "repair"),
        Job("repair", str(root / "missing_step"), dry_run=True, line=3),
        Job("repair", str(root / "dnn_classifier"), output_dir=out, dry_run=False, line=4),
        Job("repair", str(tmp_path / "elsewhere"), output_dir=out, line=5),
    ]
    summary = fleet.run_fleet(jobs, workers=1, results_path=str(results), resume=False)
    by_line = {r["line"]: r for r in _results(results)}
    assert [by_line[n]["status"] for n in (1, 2, 3, 4, 5)] == [
        "done",
        "failed",
        "failed",
        "done",
        "failed",
    ]
    assert by_line[2]["model_dir"] is None and by_line[2]["error"]["type"] == "ManifestError"
    assert by_line[2]["exit_code"] == 2 and by_line[2]["command"] == "repair"
    assert "already used by line 1" in by_line[3]["error"]["message"]
    assert "output_dir" in by_line[5]["error"]["message"] and by_line[5]["exit_code"] == 2
    assert (summary.done, summary.failed) == (2, 3)
    assert "jobs.jsonl:2: not valid JSON" in summary.table()


# --- fix through a manifest -------------------------------------------------------------------


@pytest.mark.slow
def test_fleet_fix_from_manifest(tmp_path: Path) -> None:
    root = _mix(tmp_path / "models", ("missing_step", "renamed_step"))
    exports = tmp_path / "exports"
    manifest = tmp_path / "jobs.jsonl"
    manifest.write_text(
        "\n".join(
            [
                json.dumps({"model_dir": str(root / "missing_step")}),
                json.dumps(
                    {"model_dir": str(root / "renamed_step"), "export_dir": str(exports / "r")}
                ),
                json.dumps({"model_dir": str(root / "nope"), "estimator": 3}),
            ]
        )
        + "\n"
    )
    defaults = Job("fix", "", export_dir=str(exports / "{name}"), **DNN)
    jobs = fleet.read_manifest(str(manifest), defaults)
    results = tmp_path / "results.jsonl"

    summary = fleet.run_fleet(jobs, workers=2, results_path=str(results), resume=False)

    assert (summary.done, summary.failed, summary.exit_code) == (2, 1, errors.EXIT_FLEET_FAILED)
    by_line = {r["line"]: r for r in _results(results)}
    assert by_line[3]["error"]["type"] == "ManifestError"
    assert "'estimator' must be a non-empty string" in by_line[3]["error"]["message"]
    for line, base in ((1, exports / "missing_step"), (2, exports / "r")):
        r = by_line[line]
        assert (r["status"], r["exit_code"], r["repaired"], r["step"]) == ("done", 0, True, 6)
        export = Path(r["export_path"])
        assert export.parent == base and (export / "saved_model.pb").is_file()
    # --resume skips what is done: no second export.
    again = fleet.run_fleet(jobs[:1], workers=1, results_path=str(results), resume=True)
    assert (again.skipped, again.done) == (1, 0)
