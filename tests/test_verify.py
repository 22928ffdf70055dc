"""verify on real exports of the frozen fixtures: load, step, run, parity with Estimator.predict.

Each healthy fixture is copied and exported ONCE per session (real
``Estimator.export_saved_model`` from ``model.ckpt-6``); the tests then verify those exports with
the literal ``PREDICT_FEATURES`` of ``testdata/models.py`` and with synthesized inputs, check the
SavedModel's outputs against the predictions recorded in ``MANIFEST.json``, and feed it things
that must fail with one clear line.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimator_fix import errors
from estimator_fix.model_code import userspec
from estimator_fix.verify import (
    VERIFY_SCHEMA,
    VerifyResult,
    load_inputs,
    resolve_saved_model,
    verify,
)
from tests.conftest import REPO, TESTDATA, manifest

MANIFEST = manifest()
MODELS = TESTDATA / "models.py"
HEALTHY = [name for name, spec in MANIFEST.items() if spec["healthy"]]
TOLERANCE = 1e-5


def _models_attr(name: str) -> Any:
    return userspec.load_attr(f"{MODELS}:{name}", flag="--test")


def _predict_features(fixture: str) -> dict[str, np.ndarray]:
    return _models_attr("PREDICT_FEATURES")[MANIFEST[fixture]["predict_features"]]


@dataclasses.dataclass(frozen=True)
class Exported:
    fixture: str
    model_dir: Path  # the copy the estimator is bound to
    estimator: Any
    export_path: str
    checkpoint: str  # the prefix the export came from


def _export(
    root: Path, fixture: str, serving_input_fn: Callable[[], Any] | None = None, tag: str = ""
) -> Exported:
    model_dir = root / f"{fixture}{tag}"
    shutil.copytree(TESTDATA / fixture, model_dir)
    spec = MANIFEST[fixture]
    estimator = userspec.build_estimator(
        userspec.ModelSpec(estimator=f"{MODELS}:{spec['builder']}"), model_dir=str(model_dir)
    )
    checkpoint = str(model_dir / spec["latest_checkpoint"])
    raw = estimator.export_saved_model(
        str(root / f"export-{fixture}{tag}"),
        serving_input_fn or _models_attr(spec["serving_input_fn"]),
        checkpoint_path=checkpoint,
    )
    path = raw.decode() if isinstance(raw, bytes) else str(raw)
    return Exported(fixture, model_dir, estimator, path, checkpoint)


def _cached_exports(
    root: Path, receiver: Callable[[str], Callable[[], Any]] | None, tag: str
) -> Callable[[str], Exported]:
    """Exports a fixture under ``root`` the first time it is asked for, then reuses it."""
    cache: dict[str, Exported] = {}

    def get(fixture: str) -> Exported:
        if fixture not in cache:
            cache[fixture] = _export(root, fixture, receiver(fixture) if receiver else None, tag)
        return cache[fixture]

    return get


@pytest.fixture(scope="session")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Exported]]:
    """Exports each healthy fixture at most once per session (raw-tensor serving receivers)."""
    yield _cached_exports(tmp_path_factory.mktemp("verify-exports"), None, "")


def _parsing_receiver(fixture: str) -> Callable[[], Any]:
    """A tf.Example receiver.

    linear_regressor's also parses a VarLen string feature ``s`` the model ignores, so the
    sparse path (Example bytes_list, SparseTensor for predict) runs.
    """
    import tensorflow as tf

    if fixture == "dnn_classifier":
        columns = [tf.feature_column.numeric_column(n) for n in ("x0", "x1")]
        # x2 has a default: examples may leave it out, and Estimator.predict must get the default.
        columns.append(tf.feature_column.numeric_column("x2", default_value=0.25))
    else:
        columns = [tf.feature_column.numeric_column(n) for n in ("a", "b")]
        columns.append(tf.feature_column.categorical_column_with_vocabulary_list("s", ["a", "b"]))
    spec = tf.feature_column.make_parse_example_spec(columns)
    return tf.estimator.export.build_parsing_serving_input_receiver_fn(spec)


@pytest.fixture(scope="session")
def exported_parsing(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[[str], Exported]]:
    """Exports a fixture at most once per session with a tf.Example (parsing) receiver."""
    yield _cached_exports(
        tmp_path_factory.mktemp("verify-parsing-exports"), _parsing_receiver, "-parsing"
    )


def _check_parity(result: VerifyResult) -> None:
    compared = [p for p in result.parity if p.ok is not None]
    assert result.ok, result.checks
    assert compared, result.checks
    assert all(p.ok for p in compared), result.checks
    assert result.max_abs_diff is not None and result.max_abs_diff <= TOLERANCE
    assert result.exported_step == 6
    assert result.checkpoint_step == 6


def _assert_matches_manifest(fixture: str, outputs: dict[str, np.ndarray]) -> list[str]:
    """Every output named like a recorded prediction key equals the recorded values."""
    recorded = MANIFEST[fixture]["predictions"]
    matched = []
    for key, value in outputs.items():
        if key not in recorded[0]:
            continue
        expected = np.array([row[key] for row in recorded])
        if value.dtype.kind in "SO":
            got = np.vectorize(lambda v: v.decode(), otypes=[object])(value)
            assert got.tolist() == expected.tolist(), key
        else:
            np.testing.assert_allclose(value, expected, rtol=0, atol=TOLERANCE, err_msg=key)
        matched.append(key)
    return matched


def _one_line(error: errors.Error, needle: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert needle in message, message


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


@pytest.mark.slow
def test_saved_model_without_its_variables(
    exported: Callable[[str], Exported], tmp_path: Path
) -> None:
    ex = exported("linear_regressor")
    copy = tmp_path / "1"
    shutil.copytree(ex.export_path, copy)
    shutil.rmtree(copy / "variables")
    with pytest.raises(errors.ExportError) as info:
        verify(str(copy))
    _one_line(info.value, f"{copy}: the SavedModel does not load")


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
    assert "test_verify.py" in message and "the model code is broken" in message


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


# --- Bad input: one line, the right type. ----------------------------------------------------


def _absent(root: Path) -> Path:
    return root / "nope"


def _variables_only(root: Path) -> Path:
    (root / "variables").mkdir()
    return root


def _garbage_saved_model_pb(root: Path) -> Path:
    (root / "saved_model.pb").write_bytes(b"\xff\x00 not a protobuf" * 10)
    return root


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        pytest.param(_absent, "{path}", id="missing"),
        pytest.param(_variables_only, "not a SavedModel", id="not-a-saved-model"),
        pytest.param(_garbage_saved_model_pb, "{path}", id="garbage-saved-model-pb"),
    ],
)
def test_export_dir_that_does_not_load(
    tmp_path: Path, make: Callable[[Path], Path], needle: str
) -> None:
    path = make(tmp_path)
    with pytest.raises(errors.ExportError) as info:
        verify(str(path))
    _one_line(info.value, needle.format(path=path))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        pytest.param(_absent, errors.PathNotFoundError, id="missing"),
        pytest.param(_variables_only, errors.InputError, id="not-a-saved-model"),
    ],
)
def test_resolve_saved_model_refuses(
    tmp_path: Path, make: Callable[[Path], Path], expected: type[errors.Error]
) -> None:
    path = make(tmp_path)
    with pytest.raises(expected) as info:
        resolve_saved_model(str(path))
    _one_line(info.value, str(path))


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        pytest.param("model.ckpt-6", errors.PathNotFoundError, id="missing"),
        pytest.param("", errors.InputError, id="directory"),
    ],
)
def test_bad_checkpoint_path(tmp_path: Path, checkpoint: str, expected: type[errors.Error]) -> None:
    path = tmp_path / checkpoint  # "" names tmp_path itself
    with pytest.raises(expected) as info:  # checked before the SavedModel is even loaded
        verify(str(tmp_path / "export"), checkpoint_path=str(path))
    _one_line(info.value, str(path))


@pytest.mark.slow
def test_resolve_saved_model_picks_the_version(exported: Callable[[str], Exported]) -> None:
    ex = exported("linear_regressor")
    base = str(Path(ex.export_path).parent)
    assert resolve_saved_model(base) == ex.export_path
    assert resolve_saved_model(ex.export_path) == ex.export_path


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        pytest.param("in.json", b"{not json", "not valid JSON", id="garbage-json"),
        pytest.param("in.json", b"\xff\xfe\x00garbage", "not UTF-8", id="binary-garbage"),
        pytest.param("in.json", b"[[1, 2]]", "must be a JSON object", id="not-an-object"),
        pytest.param("in.json", b"{}", "holds no features", id="empty-object"),
        pytest.param("in.json", b'{"a": [[1, 2], [3]]}', "not a rectangular", id="ragged"),
        pytest.param("in.json", b'{"a": 1.5}', "is a scalar", id="scalar"),
        pytest.param("in.json", b'{"a": [{"b": 1}]}', "must hold numbers", id="objects"),
        pytest.param(
            "in.json", b'{"a": [1, 2], "b": [1]}', "different numbers of rows", id="row-mismatch"
        ),
        pytest.param("in.json", b'{"a": []}', "no rows", id="no-rows"),
        pytest.param(
            "in.npz", b"PK\x03\x04 truncated zip", "not a readable .npz", id="garbage-npz"
        ),
    ],
)
def test_bad_inputs_file(tmp_path: Path, name: str, content: bytes, needle: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(errors.InputError) as info:
        load_inputs(str(path))
    _one_line(info.value, needle)
    assert str(path) in str(info.value)
    assert info.value.exit_code == errors.EXIT_BAD_INPUT


def test_missing_inputs_file(tmp_path: Path) -> None:
    with pytest.raises(errors.PathNotFoundError) as info:
        load_inputs(str(tmp_path / "absent.json"))
    _one_line(info.value, "absent.json")


def test_inputs_json_and_npz_round_trip(tmp_path: Path) -> None:
    as_json = tmp_path / "in.json"
    as_json.write_text(json.dumps({"a": [0.5, -1.0], "s": ["x", "y"], "v": [[1, 2], [3, 4]]}))
    loaded = load_inputs(str(as_json))
    assert loaded["a"].tolist() == [0.5, -1.0]
    assert loaded["v"].shape == (2, 2)
    as_npz = tmp_path / "in.npz"
    np.savez(as_npz, a=np.array([1.0, 2.0], np.float32), s=np.array([b"x", b"y"]))
    loaded = load_inputs(str(as_npz))
    assert loaded["a"].dtype == np.float32 and loaded["s"].tolist() == [b"x", b"y"]


@pytest.mark.slow
def test_inputs_file_missing_a_feature(tmp_path: Path, exported: Callable[[str], Exported]) -> None:
    ex = exported("dnn_classifier")
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps({"x0": [0.5, 0.1], "x1": [0.2, 0.3]}))
    with pytest.raises(errors.InputError) as info:
        verify(ex.export_path, inputs=load_inputs(str(path)), inputs_source=f"file:{path}")
    _one_line(info.value, "missing feature(s) x2")
    assert str(path) in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        pytest.param({"x": np.zeros((2, 5), np.float32)}, "expects (-1, 2)", id="wrong-shape"),
        pytest.param(
            {"x": np.array([["a", "b"]])},
            "holds strings but the SavedModel expects float32",
            id="strings-for-floats",
        ),
    ],
)
def test_inputs_that_do_not_fit_the_signature(
    inputs: dict[str, np.ndarray], needle: str, exported: Callable[[str], Exported]
) -> None:
    ex = exported("keras_object_based")
    with pytest.raises(errors.InputError) as info:
        verify(ex.export_path, inputs=inputs, inputs_source="file:/tmp/in.json")
    _one_line(info.value, needle)
    assert info.value.path == "/tmp/in.json"


# --- Other consumers of the same exports. ----------------------------------------------------


@pytest.mark.slow
def test_saved_model_cli_shows_the_signatures(
    exported_parsing: Callable[[str], Exported],
) -> None:
    ex = exported_parsing("dnn_classifier")  # three signatures: classify, classify, predict
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "saved_model_cli"), "show", "--all", "--dir", ex.export_path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    signatures = verify(ex.export_path).signatures
    assert set(signatures) == {"serving_default", "classification", "predict"}
    for key in signatures:
        assert f"signature_def['{key}']" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("fixture", HEALTHY)
def test_tf2_load_serves_the_manifest_predictions(
    fixture: str, exported: Callable[[str], Exported]
) -> None:
    import tensorflow as tf

    ex = exported(fixture)
    loaded = tf.saved_model.load(ex.export_path)
    [key] = [k for k in ("serving_default", "predict") if k in loaded.signatures][:1]
    function = loaded.signatures[key]
    features = {k: tf.constant(v) for k, v in _predict_features(fixture).items()}
    outputs = {k: v.numpy() for k, v in function(**features).items()}
    assert _assert_matches_manifest(fixture, outputs)
