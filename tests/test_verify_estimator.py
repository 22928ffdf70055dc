"""verify against an Estimator and a checkpoint that do not match the export, or are absent.

A checkpoint of another step (refused, or allowed and failing parity), one that does not
restore, model code that raises inside Estimator.predict, an estimator without a checkpoint,
and verify with no estimator at all: each fails with one clear line or reports what it can.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimator_fix import errors
from estimator_fix.verify import verify
from tests.conftest import TESTDATA
from tests.verify_helpers import Exported, _one_line, _predict_features

# The session-scoped export fixtures live in verify_helpers; registering it as a plugin gives
# every verify module the same fixture instances (one export per fixture per session).
pytest_plugins = ["tests.verify_helpers"]


# --- Negative cases. -------------------------------------------------------------------------


@pytest.mark.slow
def test_other_checkpoint_is_a_step_mismatch(exported: Callable[[str], Exported]) -> None:
    ex = exported("dnn_classifier")
    other = str(ex.model_dir / "model.ckpt-3")
    with pytest.raises(errors.ExportError) as info:
        verify(ex.export_path, estimator=ex.estimator, checkpoint_path=other)
    _one_line(info.value, "global_step 6 in the SavedModel but 3")
    assert info.value.exit_code == errors.EXIT_EXPORT_FAILED


@pytest.mark.slow
@pytest.mark.parametrize("given", [True, False], ids=["given", "synthesized"])
def test_other_checkpoint_fails_parity(given: bool, exported: Callable[[str], Exported]) -> None:
    ex = exported("dnn_classifier")
    result = verify(
        ex.export_path,
        inputs=_predict_features("dnn_classifier") if given else None,
        estimator=ex.estimator,
        checkpoint_path=str(ex.model_dir / "model.ckpt-3"),
        require_step_match=False,
    )
    assert not result.ok
    assert result.exported_step == 6 and result.checkpoint_step == 3
    assert result.max_abs_diff is not None and result.max_abs_diff > 1e-2
    [logits] = [p for p in result.parity if p.output == "logits"]
    assert logits.ok is False and logits.mismatched
    assert any(line.startswith("MISMATCH (allowed)") for line in result.checks)


@pytest.mark.slow
def test_checkpoint_that_does_not_restore(
    exported: Callable[[str], Exported], tmp_path: Path
) -> None:
    ex = exported("dnn_classifier")
    broken = tmp_path / "missing_step"
    shutil.copytree(TESTDATA / "missing_step", broken)
    prefix = str(broken / "model.ckpt-6")
    with pytest.raises(errors.ExportError) as info:
        verify(ex.export_path, estimator=ex.estimator, checkpoint_path=prefix)
    _one_line(info.value, f"{prefix} has no global_step (the SavedModel has 6)")
    # Even with the step check waived, predict cannot restore it: TensorFlow's error, one line,
    # not blamed on the user's code.
    with pytest.raises(errors.ExportError) as waived:
        verify(
            ex.export_path,
            estimator=ex.estimator,
            checkpoint_path=prefix,
            require_step_match=False,
        )
    assert not isinstance(waived.value, errors.UserCodeError)
    _one_line(waived.value, "Estimator.predict failed (NotFoundError: Key global_step not found")


@pytest.mark.slow
def test_user_code_error_in_predict_is_reported_as_such(
    exported: Callable[[str], Exported], tmp_path: Path
) -> None:
    import tensorflow as tf

    def broken_model_fn(features: Any, labels: Any, mode: str) -> Any:
        raise ValueError("the model code is broken")

    ex = exported("custom_model_fn")
    estimator = tf.estimator.Estimator(model_fn=broken_model_fn, model_dir=str(tmp_path))
    with pytest.raises(errors.UserCodeError) as info:
        verify(ex.export_path, estimator=estimator, checkpoint_path=ex.checkpoint)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("Estimator.predict raised ValueError at ")
    assert "test_verify_estimator.py" in message and "the model code is broken" in message


@pytest.mark.slow
def test_estimator_without_checkpoint_is_a_usage_error(
    exported: Callable[[str], Exported],
) -> None:
    ex = exported("linear_regressor")
    with pytest.raises(errors.UsageError, match="checkpoint"):
        verify(ex.export_path, estimator=ex.estimator)


@pytest.mark.slow
def test_without_estimator_runs_and_reads_the_step(exported: Callable[[str], Exported]) -> None:
    ex = exported("linear_regressor")
    first = verify(ex.export_path, seed=7)
    again = verify(ex.export_path, seed=7)
    assert first.ok and not first.parity_checked
    assert first.exported_step == 6 and first.checkpoint_step is None
    assert all(p.prediction_key is None for p in first.parity)
    np.testing.assert_array_equal(
        first.outputs["predict"]["predictions"], again.outputs["predict"]["predictions"]
    )
    with_checkpoint = verify(ex.export_path, checkpoint_path=ex.checkpoint)
    assert with_checkpoint.checkpoint_step == 6 and with_checkpoint.ok
