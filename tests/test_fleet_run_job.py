"""Tests of ``fleet.run_job``: one job, one JSON-able result, never an exception.

Usage errors, missing directories and user code that calls ``sys.exit`` all become a failed
result with a one-line error; the result's keys come in the documented order; and a fleet of
scans (one worker or two) never imports TensorFlow, checked in a separate process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from estimator_fix import fleet
from estimator_fix.options import Job
from tests.conftest import DNN, REPO, _mix

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
