"""fix, end to end on real Estimators: broken directory -> one command -> verified SavedModel."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TESTDATA, manifest, run_cli, strip_step, tree_digest

MANIFEST = manifest()
MODELS = str(TESTDATA / "models.py")


def _foreign_state_file(model_dir: Path) -> None:
    names = sorted(p.name[: -len(".index")] for p in model_dir.glob("*.index"))
    lines = [f'model_checkpoint_path: "/home/alice/models/run7/{names[-1]}"']
    lines += [f'all_model_checkpoint_paths: "/home/alice/models/run7/{n}"' for n in names]
    (model_dir / "checkpoint").write_text("\n".join(lines) + "\n")


# (fixture to copy, how to break it, the builder in models.py, the signature to compare)
CASES: dict[str, tuple[str, Callable[[Path], None] | None, str, str]] = {
    "dnn_classifier-missing-step": ("missing_step", None, "dnn_classifier", "predict"),
    "dnn_classifier-int32-step": ("int32_step", None, "dnn_classifier", "predict"),
    "linear_regressor-stripped": (
        "linear_regressor",
        lambda d: strip_step(d, "model.ckpt-6"),
        "linear_regressor",
        "predict",
    ),
    "dnn_linear_partitioned-renamed": (
        "dnn_linear_partitioned",
        lambda d: strip_step(d, "model.ckpt-6", new_key="training/global_step"),
        "dnn_linear_partitioned",
        "predict",
    ),
    "keras-foreign-state-file": (
        "keras_object_based",
        _foreign_state_file,
        "keras_estimator",
        "serving_default",
    ),
    "session-loop-int32-my_global_step": (
        "session_loop_int32_step",
        None,
        "session_loop_model",
        "serving_default",
    ),
}


def _predict_features(builder: str) -> dict[str, np.ndarray]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("testdata_models_for_fix", MODELS)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return {k: np.asarray(v) for k, v in module.PREDICT_FEATURES[builder].items()}


def _expected(fixture: str) -> dict[str, np.ndarray]:
    rows = MANIFEST[fixture]["predictions"]
    return {k: np.asarray([r[k] for r in rows]) for k in rows[0]}


def _fix(model_dir: Path, export_dir: Path, builder: str, *extra: str):  # type: ignore[no-untyped-def]
    return run_cli(
        "fix",
        f"--model_dir={model_dir}",
        f"--export_dir={export_dir}",
        f"--estimator={MODELS}:{builder}",
        f"--serving_input_fn={MODELS}:{builder}_serving_input_fn",
        *extra,
    )


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_fix_broken_model_to_verified_saved_model(
    case: str, model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    import tensorflow as tf

    fixture, breaker, builder, signature = CASES[case]
    d = model_copy(fixture)
    if breaker is not None:
        breaker(d)
    originals = tree_digest(d)
    originals.pop("checkpoint")  # the state file is the one file fix replaces (backup kept)
    inputs = tmp_path / "inputs.json"
    features = _predict_features(builder)
    inputs.write_text(json.dumps({k: v.tolist() for k, v in features.items()}))

    result = _fix(d, tmp_path / "export", builder, f"--inputs={inputs}", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["ok"] is True and doc["verdict_before"] == "repairable"
    assert doc["repair"] is not None
    assert doc["verify"]["max_abs_diff"] <= 1e-5 and doc["verify"]["exported_step"] == 6
    after = tree_digest(d)
    assert all(after[name] == content for name, content in originals.items())

    # The SavedModel predicts what the original, healthy checkpoint predicted.
    loaded = tf.saved_model.load(doc["export_path"])
    outputs = loaded.signatures[signature](**{k: tf.constant(v) for k, v in features.items()})
    source = MANIFEST[fixture]["source_fixture"] or fixture
    for key, expected in _expected(source).items():
        got = outputs[key].numpy().reshape(expected.shape)
        if expected.dtype.kind in "US":  # class names: exact
            assert [x.decode() for x in got.ravel()] == list(expected.ravel()), key
        else:
            np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=key)
    show = subprocess.run(
        [
            str(Path(sys.executable).parent / "saved_model_cli"),
            "show",
            "--all",
            "--dir",
            doc["export_path"],
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert show.returncode == 0 and f"signature_def['{signature}']" in show.stdout

    again = _fix(d, tmp_path / "export", builder, "--json")
    assert again.returncode == 0, again.stderr
    second = json.loads(again.stdout)
    assert second["repair"] is None and second["verdict_before"] == "healthy"
    assert second["export_path"] != doc["export_path"] and second["ok"] is True


NOISY_MODEL = """
import tensorflow as tf

def model_fn(features, labels, mode, params):
    x = tf.stack([features["x0"], features["x1"]], axis=1)
    hidden = tf.compat.v1.layers.dense(x, 4, activation=tf.nn.relu, name="hidden")
    out = tf.compat.v1.layers.dense(hidden, 1, name="output")
    # Noise at prediction time: the SavedModel cannot reproduce the checkpoint's predictions.
    out = out + tf.random.uniform(tf.shape(out), 1.0, 2.0)
    return tf.estimator.EstimatorSpec(mode, predictions={"predictions": out})
"""

_RAISING_SERVING = """
def serving_input_fn():
    features = {}
    return features["x0"]
"""


def _user_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_parity_failure_rejects_the_export(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    d = model_copy("custom_model_fn")
    user = _user_file(tmp_path, "noisy.py", NOISY_MODEL)
    result = run_cli(
        "fix",
        f"--model_dir={d}",
        f"--export_dir={tmp_path / 'export'}",
        f"--model_fn={user}:model_fn",
        f"--serving_input_fn={MODELS}:custom_estimator_serving_input_fn",
    )
    assert result.returncode == 8, result.stderr
    assert "does not predict what" in result.stderr and "Traceback" not in result.stderr
    names = [p.name for p in (tmp_path / "export").iterdir()]
    assert len(names) == 1 and names[0].startswith("rejected-")  # never a servable version


@pytest.mark.parametrize(
    ("fixture", "args", "code", "needle"),
    [
        pytest.param("conflicting_step", (), 5, "step evidence disagrees", id="conflict"),
        pytest.param("missing_step_no_evidence", (), 5, "pass --step", id="no-evidence"),
        pytest.param("missing_shard", (), 1, "data shard missing", id="missing-shard"),
        pytest.param(
            "missing_step", ("--estimator_override=nope.py:x",), 2, "nope.py", id="bad-spec"
        ),
        pytest.param(
            "missing_step",
            ("--serving_override={raising}:serving_input_fn",),
            8,
            "raising.py:4 in serving_input_fn",
            id="serving-fn-raises",
        ),
        pytest.param(
            "custom_model_fn",
            (
                "--estimator_override={models}:dnn_classifier",
                "--serving_override={models}:dnn_classifier_serving_input_fn",
            ),
            8,
            "does not match the checkpoint",
            id="model-mismatch",
        ),
    ],
)
def test_fix_refusals_touch_nothing(
    fixture: str,
    args: tuple[str, ...],
    code: int,
    needle: str,
    model_copy: Callable[[str], Path],
    tmp_path: Path,
) -> None:
    d = model_copy(fixture)
    before = tree_digest(d)
    raising = _user_file(tmp_path, "raising.py", _RAISING_SERVING)
    builder = MANIFEST[fixture]["builder"]
    flags = {
        "estimator": f"{MODELS}:{builder}",
        "serving": f"{MODELS}:{builder}_serving_input_fn",
    }
    for a in args:
        key, _, value = a[2:].partition("=")
        flags[key.removesuffix("_override")] = value.format(raising=raising, models=MODELS)
    result = run_cli(
        "fix",
        f"--model_dir={d}",
        f"--export_dir={tmp_path / 'export'}",
        f"--estimator={flags['estimator']}",
        f"--serving_input_fn={flags['serving']}",
    )
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.stderr
    assert tree_digest(d) == before
    export = tmp_path / "export"
    assert not export.exists() or list(export.iterdir()) == []


def test_fix_dry_run_writes_nothing(model_copy: Callable[[str], Path], tmp_path: Path) -> None:
    d = model_copy("missing_step")
    before = tree_digest(d)
    result = _fix(d, tmp_path / "export", "dnn_classifier", "--dry_run")
    assert result.returncode == 0, result.stderr
    assert "add an int64 global_step = 6" in result.stdout
    assert tree_digest(d) == before and not (tmp_path / "export").exists()


@pytest.mark.slow
def test_fix_with_output_dir_leaves_the_source_alone(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    d = model_copy("foreign_state_file")
    before = tree_digest(d)
    out = tmp_path / "repaired"
    result = _fix(d, tmp_path / "export", "dnn_classifier", f"--output_dir={out}", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert tree_digest(d) == before
    assert doc["export"]["checkpoint"].startswith(str(out))
    assert doc["ok"] is True
