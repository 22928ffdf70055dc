"""Tests of ``repair --output_dir`` and ``repair --dry_run``: the source directory is not touched.

``--output_dir`` writes a healthy copy elsewhere (even for a healthy, partitioned source) and
leaves the source byte for byte, without a lock file; it is refused, through the library and the
real CLI, where it is the source, inside it, or a directory that is not empty. ``--dry_run``
prints the plan (text or JSON) and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import tensorflow as tf

from estimator_fix import errors, plan, repair, scan
from estimator_fix.options import Job
from estimator_fix.storage import names
from estimator_fix.types import Verdict
from tests.conftest import (
    assert_int64_step,
    assert_nothing_written,
    assert_one_line_error,
    assert_same_tensors,
    repair_dir,
    run_cli,
    temporaries,
    tree_digest,
)

LOCK = names.LOCK_NAME


# --- --output_dir -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "step"),
    [
        pytest.param("missing_step", 6, id="missing_step"),
        pytest.param("int32_step", 6, id="int32_step"),
        pytest.param("foreign_state_file", 6, id="foreign_state_file"),
        pytest.param("dnn_linear_partitioned", 6, id="healthy_partitioned_2_shards"),
    ],
)
def test_output_dir_leaves_source_untouched(
    model_copy: Callable[[str], Path], tmp_path: Path, fixture: str, step: int
) -> None:
    source = model_copy(fixture)
    before = tree_digest(source)
    out = tmp_path / "elsewhere" / "repaired"  # the parent does not exist yet
    result = repair_dir(source, output_dir=str(out))
    assert tree_digest(source) == before  # state file included, and no lock file
    assert not (source / LOCK).exists()
    assert temporaries(source) == [] and temporaries(out.parent) == []
    assert result.output_dir == str(out)
    report = scan.scan(str(out))
    assert report.verdict is Verdict.HEALTHY, [p.code for p in report.problems]
    latest = tf.train.latest_checkpoint(str(out))
    assert latest == str(out / "model.ckpt-6")
    assert_int64_step(latest, step)
    skip = ("global_step",) if fixture == "int32_step" else ()
    assert_same_tensors(source / "model.ckpt-6", latest, skip=skip)


@pytest.mark.parametrize(
    "where",
    ["source", "inside", "inside_nested", "nonempty"],
)
def test_output_dir_refused(model_copy: Callable[[str], Path], tmp_path: Path, where: str) -> None:
    source = model_copy("missing_step")
    nonempty = tmp_path / "taken"
    nonempty.mkdir()
    (nonempty / "something").write_text("x")
    out = {
        "source": source,
        "inside": source / "out",
        "inside_nested": source / "a" / "b",
        "nonempty": nonempty,
    }[where]
    before = tree_digest(source)
    with pytest.raises(errors.UsageError):
        repair.prepare(scan.scan(str(source)), Job("repair", str(source), output_dir=str(out)))
    line = assert_one_line_error(
        run_cli("repair", f"--model_dir={source}", f"--output_dir={out}"), errors.EXIT_USAGE
    )
    assert "--output_dir" in line
    assert_nothing_written(before, source)
    assert (nonempty / "something").read_text() == "x"


# --- --dry_run --------------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_dry_run_prints_plan_and_writes_nothing(
    model_copy: Callable[[str], Path], as_json: bool
) -> None:
    model_dir = model_copy("missing_step")
    before = tree_digest(model_dir)
    proc = run_cli("repair", f"--model_dir={model_dir}", "--dry_run", *(["--json"] * as_json))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    if as_json:
        doc = json.loads(proc.stdout)
        assert doc["schema"] == plan.PLAN_SCHEMA
        assert doc["step"] == 6 and doc["is_noop"] is False
        assert doc["new_prefix"] == str(model_dir / "model.ckpt-fixed-6")
        assert doc["step_evidence"]["source"] == "prefix_suffix"
    else:
        assert "model.ckpt-fixed-6" in proc.stdout
        assert "step: 6 from prefix_suffix" in proc.stdout
    assert_nothing_written(before, model_dir)
