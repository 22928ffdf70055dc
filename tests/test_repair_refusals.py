"""Tests of what ``repair`` refuses, and that a refusal writes nothing.

Step evidence that conflicts or is missing without ``--step``, a ``--step`` out of range, and
bad input (a missing data shard): each through the library (the error type and exit code) and
through the real CLI in a subprocess (the documented exit code and one line on stderr), and the
model directory is byte for byte as it was, with no temporaries left.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from estimator_fix import errors, plan, scan
from tests.conftest import (
    assert_nothing_written,
    assert_one_line_error,
    repair_dir,
    run_cli,
    tree_digest,
)

# --- refusals: nothing written --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "evidence"),
    [
        pytest.param("conflicting_step", ("global_step_1=106", "prefix_suffix=6"), id="conflict"),
        pytest.param("missing_step_no_evidence", ("no evidence",), id="no_evidence"),
    ],
)
def test_step_evidence_refused(
    model_copy: Callable[[str], Path], fixture: str, evidence: tuple[str, ...]
) -> None:
    model_dir = model_copy(fixture)
    before = tree_digest(model_dir)
    with pytest.raises(errors.StepEvidenceError) as info:
        plan.plan(scan.scan(str(model_dir)))
    assert info.value.exit_code == errors.EXIT_STEP_EVIDENCE
    for needle in evidence:
        assert needle in str(info.value)

    line = assert_one_line_error(
        run_cli("repair", f"--model_dir={model_dir}"), errors.EXIT_STEP_EVIDENCE
    )
    assert "--step" in line
    for needle in evidence:
        assert needle in line
    assert_nothing_written(before, model_dir)


@pytest.mark.parametrize("step", [-1, 2**63], ids=["negative", "over_int64"])
def test_bad_step_is_a_usage_error(model_copy: Callable[[str], Path], step: int) -> None:
    model_dir = model_copy("missing_step")
    before = tree_digest(model_dir)
    with pytest.raises(errors.UsageError):
        plan.plan(scan.scan(str(model_dir)), step=step)
    assert_one_line_error(
        run_cli("repair", f"--model_dir={model_dir}", f"--step={step}"), errors.EXIT_USAGE
    )
    assert_nothing_written(before, model_dir)


@pytest.mark.parametrize(
    ("fixture", "code", "needle"),
    [
        pytest.param(
            "missing_shard",
            errors.EXIT_BAD_INPUT,
            "model.ckpt-6.data-00001-of-00002",
            id="missing_shard",
        ),
    ],
)
def test_unrepairable_and_bad_input_refused(
    model_copy: Callable[[str], Path], fixture: str, code: int, needle: str
) -> None:
    model_dir = model_copy(fixture)
    before = tree_digest(model_dir)
    line = assert_one_line_error(run_cli("repair", f"--model_dir={model_dir}"), code)
    assert needle in line
    with pytest.raises(errors.Error) as info:
        repair_dir(model_dir)
    assert info.value.exit_code == code
    assert_nothing_written(before, model_dir)
