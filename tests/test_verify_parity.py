"""verify parity with Estimator.predict on real exports, and which outputs it compares.

Raw-tensor receivers (every healthy fixture) and tf.Example parsing receivers, with the literal
``PREDICT_FEATURES`` of ``testdata/models.py`` and with synthesized inputs: the SavedModel's
outputs match the checkpoint's predictions and those recorded in ``MANIFEST.json``, per
signature; plus a model_fn whose predictions are a single tensor.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimator_fix.verify import VERIFY_SCHEMA, verify
from tests.conftest import TESTDATA
from tests.verify_helpers import (
    HEALTHY,
    MANIFEST,
    TOLERANCE,
    Exported,
    _assert_matches_manifest,
    _check_parity,
    _models_attr,
    _predict_features,
)

# The session-scoped export fixtures live in verify_helpers; registering it as a plugin gives
# every verify module the same fixture instances (one export per fixture per session).
pytest_plugins = ["tests.verify_helpers"]


# --- Healthy fixtures: raw receivers. --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("fixture", HEALTHY)
def test_predict_features_match_checkpoint_and_manifest(
    fixture: str, exported: Callable[[str], Exported]
) -> None:
    ex = exported(fixture)
    result = verify(
        ex.export_path,
        inputs=_predict_features(fixture),
        estimator=ex.estimator,
        checkpoint_path=ex.checkpoint,
    )
    _check_parity(result)
    assert result.inputs_source == "given"
    assert result.num_examples == 4
    assert result.signatures_run
    for signature in result.signatures_run:
        matched = _assert_matches_manifest(fixture, dict(result.outputs[signature]))
        assert matched, f"{signature}: no output named like a recorded prediction key"


@pytest.mark.slow
@pytest.mark.parametrize("fixture", HEALTHY)
def test_synthesized_inputs_match_checkpoint(
    fixture: str, exported: Callable[[str], Exported]
) -> None:
    ex = exported(fixture)
    result = verify(
        ex.export_path, estimator=ex.estimator, checkpoint_path=ex.checkpoint, num_synthesized=5
    )
    _check_parity(result)
    assert result.inputs_source == "synthesized"
    assert result.num_examples == 5
    assert {s for s in result.signatures if s in ("serving_default", "predict")} <= set(
        result.signatures_run
    )
    doc = json.loads(json.dumps(result.to_dict()))
    assert doc["schema"] == VERIFY_SCHEMA
    assert doc["ok"] is True
    assert doc["parity"] and "outputs" not in doc


EXPECTED_COMPARISONS = {
    # Raw receivers: only the predict signature (canned heads need a single string input for
    # classify/regress signatures), outputs named like the prediction keys.
    "dnn_classifier": {
        ("predict", k, k)
        for k in ("logits", "probabilities", "class_ids", "classes", "all_class_ids", "all_classes")
    },
    "linear_regressor": {("predict", "predictions", "predictions")},
    "custom_model_fn": {("serving_default", "predictions", "predictions")},
    "v1_format": {("serving_default", "predictions", "predictions")},
    "keras_object_based": {("serving_default", "y", "y")},  # named after the output layer
    "dnn_linear_partitioned": {
        ("predict", k, k)
        for k in (
            "logits",
            "logistic",
            "probabilities",
            "class_ids",
            "classes",
            "all_class_ids",
            "all_classes",
        )
    },
}


@pytest.mark.slow
@pytest.mark.parametrize("fixture", HEALTHY)
def test_which_outputs_are_compared(fixture: str, exported: Callable[[str], Exported]) -> None:
    ex = exported(fixture)
    result = verify(ex.export_path, estimator=ex.estimator, checkpoint_path=ex.checkpoint)
    compared = {(p.signature, p.output, p.prediction_key) for p in result.parity if p.ok}
    assert compared == EXPECTED_COMPARISONS[fixture]
    # Raw receivers export the predictions' own tensors: paired through the graph.
    assert {p.paired_by for p in result.parity if p.ok} == {"tensor"}
    strings = [p for p in result.parity if p.output in ("classes", "all_classes")]
    assert all(p.compared == "exact" and p.max_abs_diff is None for p in strings)


# --- Parsing (tf.Example) receivers. ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        pytest.param(
            "dnn_classifier",
            {
                ("serving_default", "scores", "probabilities"),
                ("serving_default", "classes", "all_classes"),
                ("classification", "scores", "probabilities"),
                ("classification", "classes", "all_classes"),
                ("predict", "probabilities", "probabilities"),
                ("predict", "classes", "classes"),
            },
            id="dnn_classifier-classify",
        ),
        pytest.param(
            "linear_regressor",
            {
                ("serving_default", "outputs", "predictions"),
                ("regression", "outputs", "predictions"),
                ("predict", "predictions", "predictions"),
            },
            id="linear_regressor-regress-varlen",
        ),
    ],
)
def test_parsing_receiver_synthesized(
    fixture: str,
    expected: set[tuple[str, str, str]],
    exported_parsing: Callable[[str], Exported],
) -> None:
    ex = exported_parsing(fixture)
    result = verify(ex.export_path, estimator=ex.estimator, checkpoint_path=ex.checkpoint)
    _check_parity(result)
    assert set(result.signatures_run) == set(result.signatures)
    compared = {(p.signature, p.output, p.prediction_key) for p in result.parity if p.ok}
    assert expected <= compared
    assert any("as serialized tf.Example" in line for line in result.checks)
    # The classification signature's `classes` are the class names tiled per row, a tensor of
    # their own: paired by name (alias all_classes). Everything else is a prediction's tensor.
    by_name = {(p.signature, p.output) for p in result.parity if p.paired_by == "name"}
    assert by_name == {(s, o) for s, o, k in expected if k == "all_classes"}


@pytest.mark.slow
def test_parsing_receiver_with_given_features_matches_manifest(
    exported_parsing: Callable[[str], Exported],
) -> None:
    ex = exported_parsing("dnn_classifier")
    # Flat rows for features the Example spec declares with shape (1,): reshaped to [4, 1].
    result = verify(
        ex.export_path,
        inputs=_predict_features("dnn_classifier"),
        estimator=ex.estimator,
        checkpoint_path=ex.checkpoint,
    )
    _check_parity(result)
    assert _assert_matches_manifest("dnn_classifier", dict(result.outputs["predict"]))
    scores = result.outputs["serving_default"]["scores"]
    expected = [row["probabilities"] for row in MANIFEST["dnn_classifier"]["predictions"]]
    np.testing.assert_allclose(scores, expected, rtol=0, atol=TOLERANCE)


@pytest.mark.slow
def test_parsing_receiver_default_for_an_omitted_feature(
    exported_parsing: Callable[[str], Exported],
) -> None:
    ex = exported_parsing("dnn_classifier")
    features = dict(_predict_features("dnn_classifier"))
    features.pop("x2")
    result = verify(
        ex.export_path, inputs=features, estimator=ex.estimator, checkpoint_path=ex.checkpoint
    )
    _check_parity(result)
    with_default = dict(features, x2=np.full(4, 0.25, np.float32))
    explicit = verify(ex.export_path, inputs=with_default)
    np.testing.assert_array_equal(
        result.outputs["predict"]["logits"], explicit.outputs["predict"]["logits"]
    )


@pytest.mark.slow
def test_model_fn_with_a_single_prediction_tensor(tmp_path: Path) -> None:
    """predictions=<tensor> (no dict): the export's output is `output`, predict yields arrays."""
    import tensorflow as tf

    custom_model_fn = _models_attr("custom_model_fn")

    def single_tensor_model_fn(features: Any, labels: Any, mode: str, params: Any) -> Any:
        spec = custom_model_fn(features, labels, mode, params)
        if mode != tf.estimator.ModeKeys.PREDICT:
            return spec
        return tf.estimator.EstimatorSpec(mode, predictions=spec.predictions["predictions"])

    model_dir = tmp_path / "custom_model_fn"
    shutil.copytree(TESTDATA / "custom_model_fn", model_dir)
    estimator = tf.estimator.Estimator(
        model_fn=single_tensor_model_fn, model_dir=str(model_dir), params={}
    )
    checkpoint = str(model_dir / "model.ckpt-6")
    path = estimator.export_saved_model(
        str(tmp_path / "export"),
        _models_attr("custom_estimator_serving_input_fn"),
        checkpoint_path=checkpoint,
    ).decode()
    result = verify(
        path,
        inputs=_predict_features("custom_model_fn"),
        estimator=estimator,
        checkpoint_path=checkpoint,
    )
    _check_parity(result)
    [compared] = [p for p in result.parity if p.ok]
    assert (compared.signature, compared.output, compared.prediction_key) == (
        "serving_default",
        "output",
        "output",
    )
    expected = [row["predictions"] for row in MANIFEST["custom_model_fn"]["predictions"]]
    np.testing.assert_allclose(
        result.outputs["serving_default"]["output"], expected, rtol=0, atol=TOLERANCE
    )
