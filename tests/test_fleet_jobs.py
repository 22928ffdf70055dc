"""Tests of the fleet's jobs: which model directories a fleet runs on, and with what options.

``expand_model_dirs`` (a glob, sorted and absolute; an ``@list`` file with comments and
duplicates; the usage errors), ``jobs_for_dirs`` (a shared ``--export_dir`` needs ``{name}``)
and ``read_manifest`` (a JSON Lines manifest whose lines override the flags; each bad line its
own ``BadLine``, the manifest's usage errors). Real files in ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from estimator_fix import errors, fleet
from estimator_fix.options import Job
from tests.conftest import DNN, _mix


def _replace(job: Job, **changes: Any) -> Job:
    return dataclasses.replace(job, **changes)


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
