"""The CLI as a user runs it: a separate process, exit codes, stdout/stderr, no tracebacks."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import TESTDATA, UNREPAIRABLE, run_cli, tree_digest


def _one_line_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("estimator-fix: ")
    return lines[0]


@pytest.mark.parametrize(
    ("name", "code", "verdict"),
    [
        pytest.param("dnn_classifier", 0, "healthy", id="healthy"),
        pytest.param("missing_step", 3, "repairable", id="repairable"),
        pytest.param(UNREPAIRABLE, 4, "unrepairable", id="unrepairable"),
    ],
)
def test_scan_exit_codes_and_json(
    name: str, code: int, verdict: str, model_copy: Callable[[str], Path]
) -> None:
    d = model_copy(name)
    text = run_cli("scan", f"--model_dir={d}")
    assert text.returncode == code, text.stderr
    assert verdict.upper() in text.stdout.splitlines()[0]
    as_json = run_cli("scan", f"--model_dir={d}", "--json")
    assert as_json.returncode == code
    doc = json.loads(as_json.stdout)
    assert doc["schema"] == "estimator-fix.scan/1"
    assert doc["verdict"] == verdict
    assert doc["target"].endswith("model.ckpt-6")
    assert {"state_file", "checkpoints", "problems", "stale_temporaries"} <= set(doc)


def test_scan_json_documents_the_step_evidence() -> None:
    result = run_cli("scan", f"--model_dir={TESTDATA / 'conflicting_step'}", "--json")
    doc = json.loads(result.stdout)
    [target] = [c for c in doc["checkpoints"] if c["prefix"] == doc["target"]]
    assert target["step"]["status"] == "renamed"
    assert target["step"]["conflict"] is True
    assert {(e["source"], e["value"]) for e in target["step"]["evidence"]} == {
        ("renamed_key", 106),
        ("prefix_suffix", 6),
    }
    assert "step_conflict" in {p["code"] for p in doc["problems"]}


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        pytest.param((), "name a command", id="no-command"),
        pytest.param(("frobnicate",), "unknown command", id="unknown-command"),
        pytest.param(("scan",), "needs --model_dir", id="missing-model-dir"),
        pytest.param(
            ("scan", "--model_dir=x", "--step=3"),
            "--step is not a flag of `scan`",
            id="flag-of-other-command",
        ),
        pytest.param(("scan", "--model_dir=x", "--bogus"), "bogus", id="unknown-flag"),
        pytest.param(("repair", "--model_dir=x", "--step=-1"), "step", id="negative-step"),
        pytest.param(("repair", "--model_dir=x", f"--step={2**63}"), "step", id="step-over-int64"),
        pytest.param(("repair", "--model_dir=x", "--step=abc"), "step", id="step-not-int"),
        pytest.param(("scan", "--model_dir=x", "extra"), "unexpected argument", id="stray-arg"),
        pytest.param(
            ("scan", "--model_dir=x", "--workers=2"), "--workers goes with", id="fleet-flag-alone"
        ),
        pytest.param(
            ("scan", "--model_dirs=x*", "--resume"),
            "--resume needs --results",
            id="resume-without-results",
        ),
        pytest.param(("scan", "--model_dir=x", "--model_dirs=y*"), "model_dir", id="dir-and-dirs"),
        pytest.param(
            ("scan", "--manifest=m.jsonl"),
            "--manifest is not a flag of `scan`",
            id="manifest-on-scan",
        ),
        pytest.param(
            ("scan", "--model_dirs=/nowhere-at-all/*"), "matches nothing", id="glob-matches-nothing"
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(args: tuple[str, ...], needle: str) -> None:
    result = run_cli(*args)
    assert result.returncode == 2
    assert needle in _one_line_error(result.stderr)


@pytest.mark.parametrize(
    ("setup", "needle"),
    [
        pytest.param(lambda d: d / "does-not-exist", "no such directory", id="missing-path"),
        pytest.param(lambda d: d / "model.ckpt-6.index", "is a file", id="file"),
        pytest.param(
            lambda d: ((d / "model.ckpt-6.data-00000-of-00001").unlink(), d)[-1],
            "data shard missing",
            id="missing-shard",
        ),
        pytest.param(
            lambda d: ((d / "model.ckpt-6.index").write_bytes(b"\xff" * 100), d)[-1],
            "model.ckpt-6.index",
            id="garbage-index",
        ),
        pytest.param(
            lambda d: ((d / "checkpoint").write_text("model_checkpoint_path: {"), d)[-1],
            "not a valid CheckpointState",
            id="bad-state-file",
        ),
    ],
)
@pytest.mark.parametrize("command", ["scan", "repair"])
def test_bad_input_exit_1_nothing_written(
    command: str, setup: Callable[[Path], Path], needle: str, model_copy: Callable[[str], Path]
) -> None:
    d = model_copy("missing_step")
    target = setup(d)
    before = tree_digest(d)
    result = run_cli(command, f"--model_dir={target}")
    assert result.returncode == 1
    assert needle in _one_line_error(result.stderr)
    assert result.stdout == ""
    assert tree_digest(d) == before


def test_json_error_document(tmp_path: Path) -> None:
    result = run_cli("scan", f"--model_dir={tmp_path / 'nope'}", "--json")
    assert result.returncode == 1
    doc = json.loads(result.stdout)
    assert doc["error"]["type"] == "PathNotFoundError"
    assert doc["error"]["exit_code"] == 1


def test_help_is_the_module_docstring() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "Exit codes:" in result.stdout and "estimator-fix scan" in result.stdout
    full = run_cli("--helpfull")
    assert full.returncode == 0 and "--model_dir" in full.stdout


def test_flagfile(tmp_path: Path) -> None:
    flagfile = tmp_path / "flags.txt"
    flagfile.write_text(f"--model_dir={TESTDATA / 'missing_step'}\n--json\n")
    result = run_cli("scan", f"--flagfile={flagfile}")
    assert result.returncode == 3
    assert json.loads(result.stdout)["verdict"] == "repairable"


def test_console_script_is_installed() -> None:
    import shutil
    import subprocess
    import sys

    script = Path(sys.executable).parent / "estimator-fix"
    assert script.exists() or shutil.which("estimator-fix")
    result = subprocess.run(
        [str(script), "scan", f"--model_dir={TESTDATA / 'dnn_classifier'}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr


def test_fleet_scan_results_and_exit_code(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    for name in ("dnn_classifier", "missing_step", "missing_shard"):
        model_copy(name)
    results = tmp_path / "results.jsonl"
    run = run_cli("scan", f"--model_dirs={tmp_path}/*/", f"--results={results}", "--workers=2")
    assert run.returncode == 9, run.stderr  # one directory failed (a missing shard)
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    by_dir = {Path(r["model_dir"]).name: r for r in lines}
    assert by_dir["dnn_classifier"]["exit_code"] == 0
    assert by_dir["missing_step"]["exit_code"] == 3
    assert by_dir["missing_shard"]["status"] == "failed"
    assert "Traceback" not in run.stderr
    again = run_cli(
        "scan", f"--model_dirs={tmp_path}/*/", f"--results={results}", "--resume", "--json"
    )
    summary = json.loads(again.stdout)
    assert summary["skipped"] == 2 and summary["failed"] == 1
