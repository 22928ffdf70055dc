"""Tests of ``fleet``: many model directories, worker processes, the results journal, resume.

Real files throughout: the frozen fixtures are copied into ``tmp_path`` next to directories
that are not model directories (an empty one, a file). Worker crashes are real too: a user
SPEC file whose import calls ``os._exit`` kills the worker process that loads it.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from estimator_fix import errors, fleet
from estimator_fix.cli.progress import LogProgress, TerminalProgress, progress_for
from estimator_fix.options import Job
from tests.conftest import REPO, TESTDATA

MODELS = str(TESTDATA / "models.py")
DNN = {
    "estimator": f"{MODELS}:dnn_classifier",
    "serving_input_fn": f"{MODELS}:dnn_classifier_serving_input_fn",
}

# fixture -> (scan: status, exit code, verdict), (repair: status, exit code, error type)
MIX: dict[str, tuple[tuple[str, int, str | None], tuple[str, int, str | None]]] = {
    "dnn_classifier": (("done", 0, "healthy"), ("done", 0, None)),
    "missing_step": (("done", 3, "repairable"), ("done", 0, None)),
    "renamed_step": (("done", 3, "repairable"), ("done", 0, None)),
    "conflicting_step": (("done", 3, "repairable"), ("failed", 5, "StepEvidenceError")),
    "missing_shard": (("failed", 1, None), ("failed", 1, "MissingShardError")),
    "keras_missing_step": (("done", 4, "unrepairable"), ("failed", 4, "NotRepairableError")),
    "empty": (("failed", 1, None), ("failed", 1, "NotAModelDirError")),
    "a_file": (("failed", 1, None), ("failed", 1, "NotAModelDirError")),
}


def _mix(root: Path, names: tuple[str, ...] = tuple(MIX)) -> Path:
    """Copies of the fixtures under ``root``, plus an empty directory and a file."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == "empty":
            (root / name).mkdir()
        elif name == "a_file":
            (root / name).write_text("not a model directory\n")
        else:
            shutil.copytree(TESTDATA / name, root / name)
    return root


def _results(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _by_name(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {Path(r["model_dir"]).name: r for r in results}
    assert len(out) == len(results), "one result per directory"
    return out


def _replace(job: Job, **changes: Any) -> Job:
    return dataclasses.replace(job, **changes)


def _crash_file(tmp_path: Path) -> Path:
    path = tmp_path / "crash.py"
    path.write_text("import os\n\nos._exit(7)  # what a segfault in native code looks like\n")
    return path


# --- expand_model_dirs ------------------------------------------------------------------------


def test_expand_glob_sorted_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _mix(tmp_path / "models", ("missing_step", "dnn_classifier", "empty", "a_file"))
    monkeypatch.chdir(tmp_path)
    assert fleet.expand_model_dirs("models/*") == [
        str(root / n) for n in ("a_file", "dnn_classifier", "empty", "missing_step")
    ]
    # A trailing slash matches directories only.
    assert fleet.expand_model_dirs("models/*/") == [
        str(root / n) for n in ("dnn_classifier", "empty", "missing_step")
    ]


def test_expand_list_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _mix(tmp_path / "models", ("missing_step", "dnn_classifier"))
    listing = tmp_path / "dirs.txt"
    listing.write_text(
        textwrap.dedent(
            f"""\
            # the models to migrate
            {root / "missing_step"}

              models/dnn_classifier
            {root / "missing_step"}/
            {root / "not_there"}
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    assert fleet.expand_model_dirs(f"@{listing}") == [
        str(root / "dnn_classifier"),
        str(root / "missing_step"),
        str(root / "not_there"),  # its own failed result later, not an error now
    ]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param("{tmp}/nothing-*", "matches nothing", id="glob-no-match"),
        pytest.param("@{tmp}/missing.txt", "cannot read the list file", id="missing-list"),
        pytest.param("@{tmp}/comments.txt", "lists no directories", id="empty-list"),
        pytest.param("", "empty", id="empty-spec"),
    ],
)
def test_expand_usage_errors(tmp_path: Path, spec: str, expected: str) -> None:
    (tmp_path / "comments.txt").write_text("# nothing yet\n\n")
    with pytest.raises(errors.UsageError) as caught:
        fleet.expand_model_dirs(spec.format(tmp=tmp_path))
    assert expected in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == errors.EXIT_USAGE


def test_jobs_for_dirs_needs_name_in_shared_export_dir(tmp_path: Path) -> None:
    template = Job("fix", "", export_dir=str(tmp_path / "exports"), **DNN)
    with pytest.raises(errors.UsageError, match=r"put \{name\} in it"):
        fleet.jobs_for_dirs(["/m/a", "/m/b"], template)
    assert fleet.jobs_for_dirs(["/m/a"], template)[0].export_dir == str(tmp_path / "exports")
    named = _replace(template, export_dir=str(tmp_path / "exports" / "{name}"))
    jobs = fleet.jobs_for_dirs(["/m/a", "/m/b/"], named)
    assert [j.export_dir for j in jobs] == [str(tmp_path / "exports" / n) for n in ("a", "b")]
    assert [j.model_dir for j in jobs] == ["/m/a", "/m/b"]


# --- read_manifest ----------------------------------------------------------------------------


def test_read_manifest(tmp_path: Path) -> None:
    manifest = tmp_path / "jobs.jsonl"
    lines = [
        json.dumps({"model_dir": "/m/a", "export_dir": "/e/a", "step": 6}),  # 1
        "",  # 2: skipped
        "# a comment",  # 3: skipped
        json.dumps({"model_dir": "/m/b", "model_fn": "x.py:fn", "params": {"k": 1}}),  # 4
        '{"model_dir": "/m/c", "step": 6',  # 5: not JSON
        json.dumps({"export_dir": "/e/d"}),  # 6: no model_dir
        json.dumps({"model_dir": "/m/e", "stpe": 6}),  # 7: unknown key
        json.dumps({"model_dir": "/m/f", "step": "6"}),  # 8: wrong type
        json.dumps(["/m/g"]),  # 9: not an object
        json.dumps({"model_dir": "/m/h", "estimator": "a.py:e", "model_fn": "b.py:f"}),  # 10
        json.dumps({"model_dir": "/m/i", "params": '{"k": 2}', "model_fn": "x.py:fn"}),  # 11
    ]
    manifest.write_text("\n".join(lines) + "\n")
    defaults = Job("fix", "", export_dir="/exports/{name}", tolerance=1e-3, step=None, **DNN)
    items = fleet.read_manifest(str(manifest), defaults)

    assert [type(i).__name__ for i in items] == [
        "Job",
        "Job",
        "BadLine",
        "BadLine",
        "BadLine",
        "BadLine",
        "BadLine",
        "BadLine",
        "Job",
    ]
    a, b = items[0], items[1]
    assert isinstance(a, Job) and isinstance(b, Job)
    # Line values override the flags; the rest of the flags apply.
    assert (a.model_dir, a.export_dir, a.step, a.line) == ("/m/a", "/e/a", 6, 1)
    assert (a.estimator, a.tolerance, a.command) == (DNN["estimator"], 1e-3, "fix")
    # {name} in a default is the line's directory name; model_fn drops the default estimator.
    assert (b.export_dir, b.model_fn, b.estimator, b.params, b.line) == (
        "/exports/b",
        "x.py:fn",
        None,
        {"k": 1},
        4,
    )
    assert b.serving_input_fn == DNN["serving_input_fn"]
    bad = {i.line: i for i in items if isinstance(i, fleet.BadLine)}
    assert sorted(bad) == [5, 6, 7, 8, 9, 10]
    assert bad[5].model_dir is None and "not valid JSON" in bad[5].message
    assert 'needs "model_dir"' in bad[6].message
    assert bad[7].model_dir == "/m/e" and "unknown key 'stpe'" in bad[7].message
    assert "'step' must be an integer" in bad[8].message
    assert "expected a JSON object" in bad[9].message
    assert "exclude each other" in bad[10].message
    assert all(m.message.startswith(f"{manifest}:{n}: ") for n, m in bad.items())
    assert all(m.command == "fix" for m in bad.values())
    last = items[-1]
    assert isinstance(last, Job) and last.params == {"k": 2} and last.line == 11


def test_read_manifest_usage_errors(tmp_path: Path) -> None:
    defaults = Job("fix", "", export_dir=str(tmp_path / "shared"), **DNN)
    with pytest.raises(errors.UsageError, match="cannot read the manifest"):
        fleet.read_manifest(str(tmp_path / "missing.jsonl"), defaults)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n# nothing\n")
    with pytest.raises(errors.UsageError, match="holds no job"):
        fleet.read_manifest(str(empty), defaults)
    shared = tmp_path / "shared.jsonl"
    shared.write_text('{"model_dir": "/m/a"}\n{"model_dir": "/m/b"}\n')
    with pytest.raises(errors.UsageError, match=r"shared by 2 manifest lines"):
        fleet.read_manifest(str(shared), defaults)


# --- run_job ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "exit_code", "error_type"),
    [
        pytest.param(Job("frobnicate", "/nowhere"), 2, "UsageError", id="unknown-command"),
        pytest.param(Job("fix", "/nowhere", **DNN), 2, "UsageError", id="fix-no-export"),
        pytest.param(Job("scan", "/nowhere/at/all"), 1, "PathNotFoundError", id="missing"),
        pytest.param(
            Job("repair", "/nowhere", output_dir="/x"), 1, "PathNotFoundError", id="repair"
        ),
    ],
)
def test_run_job_never_raises(job: Job, exit_code: int, error_type: str) -> None:
    result = fleet.run_job(job).to_dict()
    json.dumps(result)  # JSON-able
    assert result["schema"] == fleet.RESULT_SCHEMA
    assert (result["status"], result["exit_code"]) == ("failed", exit_code)
    assert result["error"]["type"] == error_type
    assert "\n" not in result["error"]["message"] and "Traceback" not in json.dumps(result)


def test_run_job_survives_sys_exit_in_user_code(tmp_path: Path) -> None:
    root = _mix(tmp_path / "m", ("missing_step", "dnn_classifier"))
    d = root / "missing_step"
    quitter = tmp_path / "quitter.py"
    quitter.write_text("import sys\n\nsys.exit(3)\n")
    job = Job(
        "fix",
        str(d),
        export_dir=str(tmp_path / "e"),
        estimator=DNN["estimator"],
        serving_input_fn=f"{quitter}:serving_input_fn",
    )
    summary = fleet.run_fleet(
        [job, Job("scan", str(root / "dnn_classifier"))],
        workers=1,
        results_path=None,
        resume=False,
    )
    assert (summary.done, summary.failed) == (1, 1)
    result = fleet.run_job(job).to_dict()
    assert (result["status"], result["error"]["type"]) == ("failed", "SystemExit")
    assert "called sys.exit(3)" in result["error"]["message"]
    assert result["changed"] == [] and not (tmp_path / "e").exists()


def test_run_job_result_fields(tmp_path: Path) -> None:
    d = _mix(tmp_path / "m", ("missing_step",)) / "missing_step"
    job = Job("repair", str(d), dry_run=True)
    result = fleet.run_job(job).to_dict()
    assert list(result) == [  # the documented order of the journal's keys
        "schema",
        "command",
        "model_dir",
        "line",
        "status",
        "exit_code",
        "verdict",
        "problems",
        "repaired",
        "step",
        "changed",
        "export_path",
        "dry_run",
        "error",
        "seconds",
        "attempt_key",
        "worker_pid",
        "finished_at",
    ]
    assert result["status"] == "done" and result["repaired"] is False and result["step"] == 6
    assert result["problems"] == ["step_missing"] and result["dry_run"] is True
    assert result["attempt_key"] == fleet.run_job(job).attempt_key
    assert result["attempt_key"] != Job("repair", str(d)).attempt_key


_NO_TF = """
import json, sys
from estimator_fix import fleet
from estimator_fix.options import Job

def main():
    dirs = sys.argv[1:]
    single = [fleet.run_job(Job("scan", d)) for d in dirs]
    summary = fleet.run_fleet(
        [Job("scan", d) for d in dirs], workers=int(WORKERS), results_path=None,
        resume=False,
    )
    print(json.dumps({
        "codes": [r.exit_code for r in single],
        "done": summary.done,
        "tensorflow": "tensorflow" in sys.modules,
    }))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_scan_never_imports_tensorflow(tmp_path: Path, workers: int) -> None:
    root = _mix(tmp_path / "m", ("dnn_classifier", "missing_step", "empty"))
    script = tmp_path / "no_tf.py"
    script.write_text(_NO_TF.replace("WORKERS", str(workers)))
    dirs = [str(root / n) for n in ("dnn_classifier", "missing_step", "empty")]
    proc = subprocess.run(
        [sys.executable, str(script), *dirs],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc == {"codes": [0, 3, 1], "done": 2, "tensorflow": False}


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
        pytest.param(("missing_step", "keras_missing_step"), 4, id="unrepairable"),
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
