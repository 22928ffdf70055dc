"""export: SPEC loading, the pre-flight check, the real export, and its failure modes."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from estimator_fix import errors
from estimator_fix import export as export_lib
from estimator_fix.model_code import serving, userspec
from tests.conftest import TESTDATA, manifest, run_cli, tree_digest

MANIFEST = manifest()
MODELS = str(TESTDATA / "models.py")
HEALTHY = sorted(n for n, s in MANIFEST.items() if s["healthy"])


def _estimator(builder: str, model_dir: Path | str) -> object:
    return userspec.build_estimator(
        userspec.ModelSpec(estimator=f"{MODELS}:{builder}"), str(model_dir)
    )


def _serving(builder: str) -> Callable[[], object]:
    return userspec.load_callable(f"{MODELS}:{builder}_serving_input_fn", flag="--serving_input_fn")


@pytest.mark.parametrize("name", HEALTHY)
def test_preflight_passes_on_every_healthy_fixture(name: str, tmp_path: Path) -> None:
    spec = MANIFEST[name]
    report = export_lib.preflight(
        _estimator(spec["builder"], tmp_path),
        _serving(spec["builder"]),
        str(TESTDATA / name / spec["latest_checkpoint"]),
    )
    assert report.ok, [p.describe() for p in (*report.missing, *report.mismatched)]
    assert report.restored_keys >= 3
    assert report.object_based == name.startswith("keras")


@pytest.mark.parametrize(
    ("name", "step_missing"),
    [("missing_step", True), ("renamed_step", True), ("int32_step", False)],
)
def test_preflight_sees_the_step_and_ignores_it_when_a_repair_adds_it(
    name: str, step_missing: bool, tmp_path: Path
) -> None:
    args = (
        _estimator("dnn_classifier", tmp_path),
        _serving("dnn_classifier"),
        str(TESTDATA / name / "model.ckpt-6"),
    )
    report = export_lib.preflight(*args)
    assert not report.ok and report.step_missing is step_missing
    assert [p.key for p in (*report.missing, *report.mismatched)] == ["global_step"]
    if name == "renamed_step":
        assert report.missing[0].likely_renamed_from == "training/global_step"
    assert export_lib.preflight(*args, step_will_be_added=True).ok


def _user_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "user_model.py"
    path.write_text(textwrap.dedent(body))
    return path


_MISMATCHED_MODELS = """
import tensorflow as tf

def _fn(features, labels, mode, params):
    x = tf.stack([features["x0"], features["x1"]], axis=1)
    h = tf.compat.v1.layers.dense(x, params["hidden"], activation=tf.nn.relu, name=params["name"])
    out = tf.compat.v1.layers.dense(h, 1, name="output")
    if params.get("extra"):
        tf.compat.v1.get_variable("extra/kernel", [2])
    return tf.estimator.EstimatorSpec(mode, predictions={"predictions": out})

def model_fn(features, labels, mode, params):
    return _fn(features, labels, mode, params)
"""


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        pytest.param(
            {"hidden": 5, "name": "hidden"},
            "hidden/kernel: code float32[2, 5] vs checkpoint float32[2, 4]",
            id="shape-mismatch",
        ),
        pytest.param(
            {"hidden": 4, "name": "dense_1"},
            "missing dense_1/kernel (likely renamed: hidden/kernel)",
            id="renamed-scope",
        ),
        pytest.param(
            {"hidden": 4, "name": "hidden", "extra": True},
            "missing extra/kernel",
            id="extra-variable",
        ),
    ],
)
def test_model_code_mismatch_is_one_error_listing_keys(
    params: dict[str, object], needle: str, tmp_path: Path
) -> None:
    user = _user_file(tmp_path, _MISMATCHED_MODELS)
    estimator = userspec.build_estimator(
        userspec.ModelSpec(model_fn=f"{user}:model_fn", params=params), str(tmp_path / "m")
    )
    report = export_lib.preflight(
        estimator, _serving("custom_estimator"), str(TESTDATA / "custom_model_fn/model.ckpt-6")
    )
    with pytest.raises(errors.ModelMismatchError) as info:
        export_lib.check_preflight(report)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_user_error_points_at_the_users_line(tmp_path: Path) -> None:
    user = _user_file(
        tmp_path,
        """
        def serving_input_fn():
            raise ValueError("no such feature: colour")
        """,
    )
    fn = userspec.load_callable(f"{user}:serving_input_fn", flag="--serving_input_fn")
    with pytest.raises(errors.UserCodeError) as info:
        export_lib.preflight(
            _estimator("dnn_classifier", tmp_path / "m"),
            fn,
            str(TESTDATA / "dnn_classifier/model.ckpt-6"),
        )
    message = str(info.value)
    assert f"{user}:3 in serving_input_fn" in message
    assert message.startswith("the serving input function raised ValueError at ")
    assert message.endswith(": no such feature: colour")


@pytest.mark.parametrize(
    ("spec", "error", "needle"),
    [
        pytest.param("no_colon", errors.UsageError, "expected package.module", id="malformed"),
        pytest.param("/nope/file.py:fn", errors.UsageError, "no such file", id="missing-file"),
        pytest.param("not_a_module_xyz:fn", errors.UsageError, "no module named", id="no-module"),
        pytest.param(f"{MODELS}:nope", errors.UsageError, "has no attribute", id="missing-attr"),
        pytest.param(f"{MODELS}:SEED", errors.UsageError, "not an Estimator", id="not-callable"),
        pytest.param(
            f"{MODELS}:dnn_classifier_train_input_fn",
            errors.UserCodeError,
            "dnn_classifier_train_input_fn",
            id="wrong-signature",
        ),
        pytest.param(
            "{user}:make",
            errors.UsageError,
            "returned a int, not a tf.estimator",
            id="wrong-return",
        ),
    ],
)
def test_bad_estimator_spec(
    spec: str, error: type[errors.Error], needle: str, tmp_path: Path
) -> None:
    user = _user_file(tmp_path, "def make(model_dir):\n    return 42\n")
    with pytest.raises(error) as info:
        userspec.build_estimator(
            userspec.ModelSpec(estimator=spec.format(user=user)), str(tmp_path / "m")
        )
    assert needle in str(info.value)


def test_user_file_that_fails_to_import(tmp_path: Path) -> None:
    user = _user_file(tmp_path, "import tensorflow as tf\nx = 1 / 0\n")
    with pytest.raises(errors.UserCodeError, match=r"user_model\.py:2"):
        userspec.load_attr(f"{user}:x", flag="--estimator")


@pytest.fixture(scope="module")
def exported_dnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    base = tmp_path_factory.mktemp("export")
    result = export_lib.export(
        _estimator("dnn_classifier", base / "scratch"),
        _serving("dnn_classifier"),
        str(base / "out"),
        str(TESTDATA / "dnn_classifier/model.ckpt-6"),
    )
    return base, result.export_path


def test_export_writes_a_loadable_saved_model(exported_dnn: tuple[Path, str]) -> None:
    import tensorflow as tf

    _, path = exported_dnn
    assert Path(path, "saved_model.pb").exists()
    loaded = tf.saved_model.load(path)
    assert "serving_default" in loaded.signatures or "predict" in loaded.signatures


def test_failed_export_leaves_no_temp_folder(tmp_path: Path) -> None:
    estimator = _estimator("dnn_classifier", tmp_path / "scratch")
    fn = _serving("dnn_classifier")
    broken = str(TESTDATA / "missing_step/model.ckpt-6")
    passed = export_lib.Preflight(broken, "predict", 5, (), (), False, False)  # pretend it passed
    base = tmp_path / "out"
    base.mkdir()
    with pytest.raises(errors.ExportError, match="global_step"):
        export_lib.export(estimator, fn, str(base), broken, checked=passed)
    assert list(base.iterdir()) == []


def test_export_dir_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(errors.UsageError, match="is a file"):
        export_lib.check_export_base(str(f))


@pytest.mark.parametrize("fmt", ["example", "raw"])
def test_serving_features_without_code(fmt: str, tmp_path: Path) -> None:
    import tensorflow as tf

    spec = tmp_path / "features.json"
    spec.write_text(json.dumps([{"name": n, "dtype": "float32"} for n in ("x0", "x1", "x2")]))
    features = serving.parse_features(spec.read_text(), path=str(spec))
    fn = serving.serving_input_fn(features, fmt, path=str(spec))
    result = export_lib.export(
        _estimator("dnn_classifier", tmp_path / "scratch"),
        fn,
        str(tmp_path / "out"),
        str(TESTDATA / "dnn_classifier/model.ckpt-6"),
    )
    signatures = tf.saved_model.load(result.export_path).signatures
    if fmt == "example":  # classification needs one serialized-Example input
        assert "classification" in signatures
    else:
        assert "predict" in signatures


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("{not json", id="not-json"),
        pytest.param("[]", id="empty"),
        pytest.param('[{"dtype": "float32"}]', id="no-name"),
        pytest.param('[{"name": "x", "dtype": "complex"}]', id="bad-dtype"),
        pytest.param('[{"name": "x", "shape": [-1]}]', id="bad-shape"),
        pytest.param('[{"name": "x"}, {"name": "x"}]', id="duplicate"),
    ],
)
def test_bad_features_spec(text: str) -> None:
    with pytest.raises(errors.InputError) as info:
        serving.parse_features(text, path="spec.json")
    assert str(info.value).startswith("spec.json") and "\n" not in str(info.value)


def _export_cli(
    model_dir: Path, export_dir: Path, builder: str
) -> subprocess.CompletedProcess[str]:
    """``estimator-fix export`` with testdata/models.py's ``builder`` and its serving function."""
    return run_cli(
        "export",
        f"--model_dir={model_dir}",
        f"--export_dir={export_dir}",
        f"--estimator={MODELS}:{builder}",
        f"--serving_input_fn={MODELS}:{builder}_serving_input_fn",
    )


def test_export_cli_writes_nothing_into_the_model_dir(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    d = model_copy("keras_object_based")  # model_to_estimator writes keras/ into its model_dir
    before = tree_digest(d)
    result = _export_cli(d, tmp_path / "out", "keras_estimator")
    assert result.returncode == 0, result.stderr
    assert tree_digest(d) == before
    assert "exported:" in result.stdout


def test_export_cli_on_a_broken_checkpoint_says_repair(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    d = model_copy("missing_step")
    result = _export_cli(d, tmp_path / "out", "dnn_classifier")
    assert result.returncode == 8
    assert "global_step" in result.stderr and "repair" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


_EVAL_RECEIVER = """
import tensorflow as tf
from tensorflow_estimator.python.estimator.export.export import SupervisedInputReceiver

def eval_receiver_fn():
    features = {n: tf.compat.v1.placeholder(tf.float32, [None], name=n) for n in ("x0", "x1")}
    labels = tf.compat.v1.placeholder(tf.float32, [None], name="labels")
    return SupervisedInputReceiver(features, labels, {**features, "labels": labels})
"""


def test_eval_mode_export_with_assets_extra(tmp_path: Path) -> None:
    import tensorflow as tf

    user = _user_file(tmp_path, _EVAL_RECEIVER)
    asset = tmp_path / "vocab.txt"
    asset.write_text("a\nb\n")
    result = export_lib.export(
        _estimator("custom_estimator", tmp_path / "scratch"),
        userspec.load_callable(f"{user}:eval_receiver_fn", flag="--serving_input_fn"),
        str(tmp_path / "out"),
        str(TESTDATA / "custom_model_fn/model.ckpt-6"),
        mode="eval",
        assets_extra=export_lib.parse_assets_extra([f"extra/vocab.txt={asset}"]),
    )
    assert result.preflight.ok and result.mode == "eval"
    assert (Path(result.export_path) / "assets.extra/extra/vocab.txt").read_text() == "a\nb\n"
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        meta = tf.compat.v1.saved_model.loader.load(sess, ["eval"], result.export_path)
        assert "eval" in meta.signature_def
