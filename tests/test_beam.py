"""Tests of ``estimator_fix.beam`` and ``tools/beam_fleet.py``: the fleet as a Beam pipeline.

Every pipeline runs on the DirectRunner in ``multi_processing`` mode with 2 worker processes,
over copies of the frozen fixtures next to an empty directory, and is compared with
``fleet.run_fleet(..., workers=1)`` on a second, identical copy. A retried bundle is a real
one: the DirectRunner's ``--direct_runner_bundle_repeat=1`` runs every bundle once more before
the attempt whose outputs it keeps, exactly as a runner retrying a failed bundle would.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("apache_beam")

from estimator_fix import beam as fleet_beam
from estimator_fix import errors, fleet
from estimator_fix.options import Job
from tests.conftest import REPO, TESTDATA

DIRECT_2 = (
    "--runner=DirectRunner",
    "--direct_running_mode=multi_processing",
    "--direct_num_workers=2",
    "--default_sdk_harness_log_level=WARNING",
)
RETRY_EVERY_BUNDLE = ("--direct_runner_bundle_repeat=1",)
FIXTURES = ("dnn_classifier", "missing_step", "renamed_step", "conflicting_step", "missing_shard")
REPAIRED = ("missing_step", "renamed_step")  # repairable without --step
FAILED = {  # per command: the directories that land in the dead-letter file
    "scan": {"missing_shard", "empty"},
    "repair": {"missing_shard", "empty", "conflicting_step"},
}


def _mix(root: Path) -> Path:
    """Copies of the fixtures under ``root``, plus an empty directory."""
    root.mkdir(parents=True)
    for name in FIXTURES:
        shutil.copytree(TESTDATA / name, root / name)
    (root / "empty").mkdir()
    return root


def _jobs(root: Path, command: str) -> list[Job | fleet.BadLine]:
    jobs: list[Job | fleet.BadLine] = list(
        fleet.jobs_for_dirs(
            fleet.expand_model_dirs(f"{root}/*"), Job(command=command, model_dir="")
        )
    )
    # What a manifest can hold besides jobs: a line that is not one, and a duplicate directory.
    jobs.append(fleet.BadLine(9, None, "jobs.jsonl:9: not valid JSON (column 1: x)", command))
    jobs.append(Job(command=command, model_dir=str(root / "missing_step"), line=10))
    return jobs


def _run(
    jobs: Sequence[Job | fleet.BadLine],
    prefix: Path,
    *,
    attempts: bool = True,
    extra: Sequence[str] = (),
) -> fleet_beam.Outputs:
    outputs = fleet_beam.outputs_for(str(prefix))
    attempts_dir = fleet_beam.new_attempts_dir(str(prefix)) if attempts else None
    with fleet_beam.new_pipeline([*DIRECT_2, *extra]) as pipeline:
        fleet_beam.build_pipeline(pipeline, jobs, outputs, attempts_dir=attempts_dir)
    return outputs


def _lines(path: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _name(result: dict[str, Any]) -> str:
    return Path(result["model_dir"]).name if result["model_dir"] else f"line {result['line']}"


def _key(result: dict[str, Any]) -> tuple[Any, ...]:
    """What must agree between Beam and the fleet (paths differ: two copies)."""
    return (
        _name(result),
        result["status"],
        result["exit_code"],
        result["verdict"],
        tuple(result["problems"]),
        result["repaired"],
        result["step"],
        (result["error"] or {}).get("type"),
    )


def _fixed_indexes(model_dir: Path) -> list[str]:
    return sorted(p.name for p in model_dir.glob("*fixed*.index"))


def _fleet(
    root: Path, command: str, tmp_path: Path
) -> tuple[list[dict[str, Any]], fleet.FleetSummary]:
    journal = tmp_path / f"fleet-{command}.jsonl"
    summary = fleet.run_fleet(
        _jobs(root, command), workers=1, results_path=str(journal), resume=False
    )
    return _lines(str(journal)), summary


def _check_against_fleet(
    outputs: fleet_beam.Outputs,
    command: str,
    roots: tuple[Path, Path],
    fleet_run: tuple[list[dict[str, Any]], fleet.FleetSummary],
) -> list[dict[str, Any]]:
    """Beam's results and summary against the fleet's; returns Beam's results."""
    fleet_results, summary = fleet_run
    done, failed = _lines(outputs.done_file), _lines(outputs.failed_file)
    assert sorted(map(_key, done + failed)) == sorted(map(_key, fleet_results))
    assert all(r["status"] == "done" for r in done)
    assert all(r["status"] == "failed" for r in failed)
    dead = {_name(r) for r in failed}
    assert dead == FAILED[command] | {"line 9", "missing_step"}  # + the bad line, the duplicate
    assert [r["error"]["type"] for r in failed if _name(r) == "line 9"] == ["ManifestError"]
    # The directories' work ran in worker processes, not in this one (which rejected line 9 and
    # the duplicate at launch).
    assert os.getpid() not in {r["worker_pid"] for r in done + failed if r["line"] is None}
    beam_summary = fleet_beam.read_summary(outputs)
    assert beam_summary["exit_code"] == summary.exit_code == errors.EXIT_FLEET_FAILED
    as_fleet = fleet_beam.fleet_summary(beam_summary, seconds=1.0, workers=2)
    for field in ("command", "total", "done", "failed", "by_verdict", "by_exit_code"):
        assert getattr(as_fleet, field) == getattr(summary, field), field
    beam_root, fleet_root = (str(r) for r in roots)
    assert sorted(f.replace(beam_root, "ROOT") for f in as_fleet.failures) == sorted(
        f.replace(fleet_root, "ROOT") for f in summary.failures
    )
    return done + failed


def test_scan_matches_fleet_with_dead_letters(tmp_path: Path) -> None:
    root, local = _mix(tmp_path / "beam"), _mix(tmp_path / "local")
    outputs = _run(_jobs(root, "scan"), tmp_path / "out" / "scan")
    fleet_run = _fleet(local, "scan", tmp_path)
    results = _check_against_fleet(outputs, "scan", (root, local), fleet_run)
    assert len({r["worker_pid"] for r in results if r["line"] is None}) == 2
    # A scan changes nothing, so it leaves no attempt records.
    assert not (tmp_path / "out" / "scan-attempts").exists()


def test_repair_matches_fleet_and_a_rerun_repairs_nothing(tmp_path: Path) -> None:
    root, local = _mix(tmp_path / "beam"), _mix(tmp_path / "local")
    outputs = _run(_jobs(root, "repair"), tmp_path / "out" / "repair")
    fleet_run = _fleet(local, "repair", tmp_path)
    first = _check_against_fleet(outputs, "repair", (root, local), fleet_run)
    assert {_name(r) for r in first if r["repaired"]} == set(REPAIRED)

    # The pipeline again, over the same directories: the work is done, nothing is repaired twice.
    again = _run(_jobs(root, "repair"), tmp_path / "out" / "repair")
    rerun = {_name(r): r for r in fleet_beam.read_results(again) if r["line"] is None}
    assert not any(r["repaired"] for r in rerun.values())
    for name in REPAIRED:
        assert rerun[name]["status"] == "done"
        assert rerun[name]["verdict"] == "healthy"
        assert rerun[name]["changed"] == []
        assert _fixed_indexes(root / name) == ["model.ckpt-fixed-6.index"]
        assert len(list((root / name).glob("checkpoint.bak-*"))) == 1


def test_retried_bundles_replay_their_results(tmp_path: Path) -> None:
    """Every bundle runs twice; the kept attempt replays the first one's repair."""
    root, local = _mix(tmp_path / "beam"), _mix(tmp_path / "local")
    outputs = _run(_jobs(root, "repair"), tmp_path / "out" / "r", extra=RETRY_EVERY_BUNDLE)
    fleet_run = _fleet(local, "repair", tmp_path)
    results = _check_against_fleet(outputs, "repair", (root, local), fleet_run)
    by_name = {_name(r): r for r in results if r["line"] is None}
    for name in REPAIRED:
        assert by_name[name]["repaired"] is True
        assert by_name[name]["changed"]  # the files the first attempt added
        assert _fixed_indexes(root / name) == ["model.ckpt-fixed-6.index"]
        assert len(list((root / name).glob("checkpoint.bak-*"))) == 1


# --- the DoFn and the CombineFn, in this process -------------------------------------------


def _process(fn: fleet_beam.RunJobFn, job: Job) -> dict[str, Any]:
    (out,) = list(fn.process(job.to_dict()))
    return out if isinstance(out, dict) else out.value


def _listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_run_job_fn_replays_a_recorded_attempt(tmp_path: Path) -> None:
    model_dir = _mix(tmp_path / "models") / "missing_step"
    attempts = tmp_path / "attempts" / "run1"
    job = Job(command="repair", model_dir=str(model_dir))
    first_worker = fleet_beam.RunJobFn(attempts_dir=str(attempts))
    first_worker.setup()
    first = _process(first_worker, job)
    assert first["repaired"] is True
    after_first = _listing(tmp_path / "models")
    assert [p.name for p in attempts.iterdir()] == [f"{job.attempt_key}.json"]

    retry_worker = fleet_beam.RunJobFn(attempts_dir=str(attempts))  # another worker, same run
    retry_worker.setup()
    assert _process(retry_worker, job) == first  # identical, timestamps and pid included
    assert _listing(tmp_path / "models") == after_first

    # A record of another job (other options) is not replayed; a scan is never recorded.
    other = Job(command="repair", model_dir=str(model_dir), drop_renamed=True)
    assert _process(retry_worker, other)["repaired"] is False
    assert _process(retry_worker, Job(command="scan", model_dir=str(model_dir)))
    assert len(list(attempts.iterdir())) == 2
    assert _fixed_indexes(model_dir) == ["model.ckpt-fixed-6.index"]


def test_run_job_fn_without_records_still_never_repairs_twice(tmp_path: Path) -> None:
    """Without attempt records a retry finds the directory healthy: no second repair, but its
    result says repaired false (why the pipeline keeps records)."""
    model_dir = _mix(tmp_path / "models") / "renamed_step"
    job = Job(command="repair", model_dir=str(model_dir))
    fn = fleet_beam.RunJobFn(attempts_dir=None)
    fn.setup()
    assert _process(fn, job)["repaired"] is True
    retry = _process(fn, job)
    assert (retry["status"], retry["verdict"], retry["repaired"]) == ("done", "healthy", False)
    assert _fixed_indexes(model_dir) == ["model.ckpt-fixed-6.index"]


def test_run_job_fn_routes_failures_to_the_dead_letter_tag(tmp_path: Path) -> None:
    fn = fleet_beam.RunJobFn(attempts_dir=None)
    fn.setup()
    (out,) = list(fn.process(Job(command="scan", model_dir=str(tmp_path)).to_dict()))
    assert out.tag == fleet_beam.FAILED_TAG
    assert out.value["error"]["type"] == "NotAModelDirError"


def _summary_input(i: int) -> dict[str, Any]:
    """A scan result: every third one failed, the rest repairable."""
    failed = i % 3 == 0
    error = {"type": "InputError", "message": f"/m/d{i:03d}: bad", "path": None}
    return {
        "model_dir": f"/m/d{i:03d}",
        "line": None,
        "status": "failed" if failed else "done",
        "exit_code": 1 if failed else 3,
        "verdict": None if failed else "repairable",
        "error": error if failed else None,
        "seconds": 0.5,
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_summary_fn_is_order_independent(seed: int) -> None:
    """Any split into bundles, in any order, merged in any order: one summary, the expected one."""
    fn = fleet_beam.SummaryFn("scan")
    results = [_summary_input(i) for i in range(300)]
    shuffled = random.Random(seed).sample(results, len(results))
    cuts = sorted(random.Random(seed).sample(range(1, 300), 3))
    accs = []
    for lo, hi in zip([0, *cuts], [*cuts, 300], strict=True):
        acc = fn.create_accumulator()
        for r in shuffled[lo:hi]:
            acc = fn.add_input(acc, r)
        accs.append(acc)
    random.Random(seed).shuffle(accs)
    doc = fn.extract_output(fn.merge_accumulators(accs))
    one = fn.create_accumulator()
    for r in results:
        one = fn.add_input(one, r)
    assert doc == fn.extract_output(one)
    assert (doc["total"], doc["done"], doc["failed"]) == (300, 200, 100)
    assert doc["by_verdict"] == {"repairable": 200}
    assert doc["by_exit_code"] == {"1": 100, "3": 200}
    # The failure lines kept are the smallest ones, sorted: not whichever bundle came first.
    everyone = sorted(f"/m/d{i:03d}: bad" for i in range(0, 300, 3))
    assert doc["failures"] == everyone[: fleet_beam.MAX_SUMMARY_FAILURES]
    assert doc["exit_code"] == errors.EXIT_FLEET_FAILED
    assert doc["work_seconds"] == 150.0


# --- tools/beam_fleet.py ----------------------------------------------------------------------


def _tool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "beam_fleet.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        cwd=cwd,
        timeout=300,
    )


def test_tool_runs_a_scan_on_the_direct_runner(tmp_path: Path) -> None:
    root = _mix(tmp_path / "models")
    proc = _tool(
        "--command=scan",
        f"--model_dirs={root}/*",
        "--results=out/scan",
        "--num_shards=0",
        "--json",
        *DIRECT_2,
        cwd=tmp_path,
    )
    assert proc.returncode == errors.EXIT_FLEET_FAILED, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["total"], doc["done"], doc["failed"], doc["workers"]) == (6, 4, 2, 2)
    assert doc["by_verdict"] == {"healthy": 1, "repairable": 3}
    assert doc["outputs"]["summary"] == str(tmp_path / "out" / "scan-summary.json")
    results = fleet_beam.read_results(
        fleet_beam.outputs_for(str(tmp_path / "out" / "scan"), num_shards=0)
    )
    assert sorted(_name(r) for r in results) == sorted([*FIXTURES, "empty"])
    assert not list((tmp_path / "out").glob("*-attempts"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("--bogus=1",), "unknown flag --bogus", id="unknown-flag"),
        pytest.param(("stray",), "unexpected argument 'stray'", id="stray-word"),
        pytest.param(("--step=3",), "--step is not a flag of `scan`", id="not-a-scan-flag"),
        pytest.param(
            ("--model_dirs=nothing-*",), "--model_dirs=nothing-*: matches nothing", id="empty-glob"
        ),
    ],
)
def test_tool_usage_errors(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    base = ["--command=scan", "--results=out/x"]
    if not any(a.startswith("--model_dirs") for a in args):
        base.append(f"--model_dirs={tmp_path}/*")
    proc = _tool(*base, *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert f"beam_fleet: error: {message}" in proc.stderr
    assert not (tmp_path / "out").exists()
