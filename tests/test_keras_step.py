"""Keras-based Estimators' step: object-based checkpoints get
``estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE`` and its node in the object graph.

Real TensorFlow files throughout: checkpoints written by ``tf.train.Checkpoint`` (every
object-based step key and optimizer counter a Keras or TF2 program saves), a
``model_to_estimator`` directory trained a few steps with its step stripped, and Keras ``fit``
+ ``save_weights`` checkpoints (legacy and new optimizers) served through
``model_to_estimator``; the SavedModel must predict what ``keras.Model.predict`` does.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimator_fix import errors, plan, scan
from estimator_fix.checkpoint import index_file
from estimator_fix.checkpoint.keys import OBJECT_GRAPH_KEY, OBJECT_STEP_KEY
from estimator_fix.types import EvidenceSource, StepStatus, Verdict
from tests.conftest import read_checkpoint, repair_dir, run_cli, tree_digest

_X = np.random.RandomState(3).uniform(-1, 1, size=(6, 2)).astype(np.float32)

# The SPEC a user writes for a Keras model served through model_to_estimator.
_SPEC = """
import tensorflow as tf


def keras_model():
    inputs = tf.keras.Input(shape=(2,), name="x")
    hidden = tf.keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    outputs = tf.keras.layers.Dense(1, name="y")(hidden)
    model = tf.keras.Model(inputs, outputs)
    model.compile(optimizer=tf.keras.optimizers.legacy.SGD(0.1), loss="mse")
    return model


def estimator(model_dir):
    return tf.keras.estimator.model_to_estimator(keras_model=keras_model(), model_dir=model_dir)


def serving_input_fn():
    features = {"x": tf.compat.v1.placeholder(tf.float32, shape=[None, 2], name="x")}
    return tf.estimator.export.ServingInputReceiver(features, features)
"""


def _object_step(prefix: str | Path) -> int:
    """The step as an object-graph restore (``tf.train.Checkpoint``) finds it: through the
    root's ``estimator_global_step`` child, not by key."""
    import tensorflow as tf

    step = tf.Variable(-1, dtype=tf.int64)
    tf.train.Checkpoint(estimator_global_step=step).read(str(prefix)).expect_partial()
    return int(step.numpy())


def _strip_index_entry(prefix: Path, key: str) -> None:
    """Removes ``key`` from a copy's index only (its node stays in the object graph), the way
    stripping scripts that edit the index leave a checkpoint."""
    path = index_file.index_path(str(prefix))
    index = index_file.read_index(path)
    items = [(b"", index.header.raw_value)]
    items += [(e.key, e.raw_value) for e in index.entries if e.name != key]
    Path(path).write_bytes(index_file.encode_index(items))


def _new_prefix(model_dir: Path, **job: Any) -> str:
    result = repair_dir(model_dir, **job)
    assert result.new_prefix is not None
    return result.new_prefix


# --- every object-based step key and optimizer counter (tf.train.Checkpoint files) -------------


def _tf2_checkpoint(model_dir: Path, where: str, name: str, value: int, dtype: str) -> Path:
    """An object-based checkpoint with a kernel and a counter ``where.name`` (``""``: a child
    of the root), written by ``tf.train.Checkpoint.write`` to ``model.ckpt`` (no ``-N``)."""
    import tensorflow as tf

    model = tf.Module()
    model.kernel = tf.Variable(np.arange(6, dtype=np.float32).reshape(2, 3))
    children: dict[str, Any] = {"model": model}
    counter = tf.Variable(value, dtype=getattr(tf, dtype))
    if where:
        holder = tf.Module()
        setattr(holder, name, counter)
        children[where] = holder
    else:
        children[name] = counter
    model_dir.mkdir()
    tf.train.Checkpoint(**children).write(str(model_dir / "model.ckpt"))
    return model_dir


TF2_CASES = {
    # id: (holder, attribute, dtype, status, evidence source)
    "legacy-optimizer-iter": ("optimizer", "iter", "int64", "missing", "optimizer_iterations"),
    "new-optimizer-_iterations": (
        "optimizer",
        "_iterations",
        "int64",
        "missing",
        "optimizer_iterations",
    ),
    "tf2-optimizer-iterations": (
        "optimizer",
        "iterations",
        "int64",
        "missing",
        "optimizer_iterations",
    ),
    "tf2-step": ("", "step", "int64", "missing", "tf2_step"),
    "renamed-global_step": ("", "global_step", "int64", "renamed", "renamed_key"),
    "int32-estimator_global_step": (
        "",
        "estimator_global_step",
        "int32",
        "wrong_dtype",
        "step_key",
    ),
}


@pytest.mark.parametrize("case", sorted(TF2_CASES))
def test_every_object_based_step_key_is_evidence_and_repaired(tmp_path: Path, case: str) -> None:
    where, name, dtype, status, source = TF2_CASES[case]
    model_dir = _tf2_checkpoint(tmp_path / "m", where, name, 17, dtype)
    report = scan.scan(str(model_dir))
    target = report.target_report
    assert target is not None and target.step is not None
    assert report.verdict is Verdict.REPAIRABLE
    assert target.step.status is StepStatus(status)
    assert [(e.source, e.value) for e in target.step.evidence] == [(EvidenceSource(source), 17)]
    source_prefix = model_dir / "model.ckpt"
    before = tree_digest(model_dir)
    new_prefix = _new_prefix(model_dir)
    for rel, content in before.items():  # the original files are untouched
        assert (model_dir / rel).read_bytes() == content[1]
    tensors = read_checkpoint(new_prefix)
    assert tensors[OBJECT_STEP_KEY][0].name == "int64"
    assert int(tensors[OBJECT_STEP_KEY][2]) == 17
    assert _object_step(new_prefix) == 17
    if status != "wrong_dtype":  # the source has no step an object-graph restore finds
        assert _object_step(source_prefix) == -1
    old = read_checkpoint(source_prefix)
    for key, (old_dtype, _, value) in old.items():
        if key not in (OBJECT_GRAPH_KEY, OBJECT_STEP_KEY):
            assert tensors[key][0] == old_dtype and np.array_equal(tensors[key][2], value), key
    assert scan.scan(str(model_dir)).verdict is Verdict.HEALTHY


def test_save_weights_prefix_without_evidence_needs_step(tmp_path: Path) -> None:
    model_dir = _tf2_checkpoint(tmp_path / "m", "model", "bias_count", 1, "float32")
    with pytest.raises(errors.StepEvidenceError, match="pass --step"):
        plan.plan(scan.scan(str(model_dir)))
    assert _object_step(_new_prefix(model_dir, step=9)) == 9


# --- the frozen model_to_estimator fixture whose key and node were removed ---------------------


def test_keras_missing_step_fixture_is_repaired(model_copy: Callable[[str], Path]) -> None:
    model_dir = model_copy("keras_missing_step")
    report = scan.scan(str(model_dir))
    assert report.verdict is Verdict.REPAIRABLE
    assert {p.code for p in report.problems if p.severity == "repairable"} == {
        "object_based_step_missing"
    }
    new_prefix = _new_prefix(model_dir)
    assert new_prefix.endswith("model.ckpt-fixed-6")
    assert _object_step(new_prefix) == 6
    assert int(read_checkpoint(new_prefix)[OBJECT_STEP_KEY][2]) == 6
    # A second identical command changes nothing.
    again = tree_digest(model_dir)
    result = run_cli("repair", f"--model_dir={model_dir}", "--step=6")
    assert result.returncode == 0, result.stderr
    assert tree_digest(model_dir) == again


# --- real Keras Estimators and Keras models (trained; slow) -----------------------------------


def _keras_model(optimizer: Any) -> Any:
    import tensorflow as tf

    inputs = tf.keras.Input(shape=(2,), name="x")
    hidden = tf.keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    outputs = tf.keras.layers.Dense(1, name="y")(hidden)
    model = tf.keras.Model(inputs, outputs)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _train_data() -> tuple[np.ndarray, np.ndarray]:
    x = np.random.RandomState(5).uniform(-1, 1, size=(24, 2)).astype(np.float32)
    return x, (x[:, :1] - 0.5 * x[:, 1:]).astype(np.float32)


@pytest.fixture(scope="session")
def keras_estimator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ``model_to_estimator`` directory trained 3 steps (absolute paths in its state file)."""
    import tensorflow as tf

    model_dir = tmp_path_factory.mktemp("keras_estimator") / "trained"
    estimator = tf.keras.estimator.model_to_estimator(
        keras_model=_keras_model(tf.keras.optimizers.legacy.SGD(0.1)), model_dir=str(model_dir)
    )
    x, y = _train_data()

    def input_fn() -> Any:
        return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).batch(8).repeat()

    estimator.train(input_fn, steps=3)
    return model_dir


@pytest.fixture(scope="session")
def save_weights_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    """Keras ``fit`` + ``save_weights`` (``model.ckpt``, no ``-N``), with a legacy and a new
    optimizer: each directory and the Keras model's predictions on ``_X``."""
    import tensorflow as tf

    out: dict[str, tuple[Path, Any]] = {}
    x, y = _train_data()
    for name, optimizer in [
        ("legacy", tf.keras.optimizers.legacy.Adam(0.01)),
        ("new", tf.keras.optimizers.Adam(0.01)),
    ]:
        model = _keras_model(optimizer)
        model.fit(x, y, epochs=1, batch_size=8, verbose=0)  # 3 steps
        model_dir = tmp_path_factory.mktemp(f"save_weights_{name}") / "m"
        model.save_weights(str(model_dir / "model.ckpt"))
        out[name] = (model_dir, model.predict(_X, verbose=0))
    return out


def _fix_and_predict(model_dir: Path, tmp_path: Path, *extra: str) -> tuple[dict, np.ndarray]:
    """``estimator-fix fix`` with a SPEC file of the user's, then the SavedModel's predictions."""
    import tensorflow as tf

    spec = tmp_path / "keras_spec.py"
    spec.write_text(textwrap.dedent(_SPEC))
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps({"x": _X.tolist()}))
    result = run_cli(
        "fix",
        f"--model_dir={model_dir}",
        f"--export_dir={tmp_path / 'export'}",
        f"--estimator={spec}:estimator",
        f"--serving_input_fn={spec}:serving_input_fn",
        f"--inputs={inputs}",
        "--json",
        *extra,
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    loaded = tf.saved_model.load(doc["export_path"])
    outputs = loaded.signatures["serving_default"](x=tf.constant(_X))
    return doc, outputs["y"].numpy()


@pytest.mark.slow
@pytest.mark.parametrize("strip", ["index-entry", "index-entry-and-node"])
def test_model_to_estimator_with_stripped_step(
    keras_estimator_dir: Path, tmp_path: Path, strip: str
) -> None:
    import tensorflow as tf

    model_dir = tmp_path / "copy"
    shutil.copytree(keras_estimator_dir, model_dir)
    state = (model_dir / "checkpoint").read_text()
    assert str(keras_estimator_dir) in state  # absolute paths, to the original directory
    prefix = model_dir / "model.ckpt-3"
    if strip == "index-entry":
        _strip_index_entry(prefix, OBJECT_STEP_KEY)
    else:  # the whole checkpoint re-saved without the key, and the step's node unlinked
        tensors = {k: v[2] for k, v in read_checkpoint(prefix).items() if k != OBJECT_STEP_KEY}
        graph = _without_step_child(tensors[OBJECT_GRAPH_KEY])
        tensors[OBJECT_GRAPH_KEY] = np.array(graph, dtype=object)
        for p in model_dir.glob("model.ckpt-3.*"):
            p.unlink()
        names = sorted(tensors)
        tf.raw_ops.SaveV2(
            prefix=str(prefix),
            tensor_names=names,
            shape_and_slices=[""] * len(names),
            tensors=[tf.constant(tensors[n]) for n in names],
        )
    run = run_cli("scan", f"--model_dir={model_dir}", "--json")
    assert run.returncode == errors.EXIT_REPAIRABLE, run.stderr
    assert "object_based_step_missing" in {p["code"] for p in json.loads(run.stdout)["problems"]}
    before = {p.name: p.read_bytes() for p in model_dir.glob("model.ckpt-3.*")}
    doc, served = _fix_and_predict(model_dir, tmp_path)
    assert doc["verify"]["exported_step"] == 3 and doc["verify"]["ok"]
    assert {p.name: p.read_bytes() for p in model_dir.glob("model.ckpt-3.*")} == before
    new_prefix = doc["repair"]["new_prefix"]
    assert _object_step(new_prefix) == 3
    keras = _keras_model("sgd")
    keras.load_weights(str(keras_estimator_dir / "model.ckpt-3")).expect_partial()
    np.testing.assert_allclose(served, keras.predict(_X, verbose=0), atol=1e-6)


def _without_step_child(payload: bytes) -> bytes:
    """The object graph with the root's ``estimator_global_step`` child removed."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(payload)
    kept = [c for c in graph.nodes[0].children if c.local_name != "estimator_global_step"]
    del graph.nodes[0].children[:]
    graph.nodes[0].children.extend(kept)
    return graph.SerializeToString()


@pytest.mark.slow
@pytest.mark.parametrize("optimizer", ["legacy", "new"])
def test_save_weights_served_through_model_to_estimator(
    save_weights_dirs: dict[str, tuple[Path, Any]], tmp_path: Path, optimizer: str
) -> None:
    source, keras_predictions = save_weights_dirs[optimizer]
    model_dir = tmp_path / "m"
    shutil.copytree(source, model_dir)
    target = scan.scan(str(model_dir)).target_report
    assert target is not None and target.step is not None
    counter = "iter" if optimizer == "legacy" else "_iterations"
    assert [(e.key, e.value) for e in target.step.evidence] == [
        (f"optimizer/{counter}/.ATTRIBUTES/VARIABLE_VALUE", 3)
    ]
    doc, served = _fix_and_predict(model_dir, tmp_path)
    assert doc["repair"]["step"] == 3 and doc["verify"]["exported_step"] == 3
    np.testing.assert_allclose(served, keras_predictions, atol=1e-6)
    new_prefix = doc["repair"]["new_prefix"]
    assert new_prefix.endswith("model.ckpt-fixed-3")
    assert _object_step(new_prefix) == 3
    # Keras still loads the repaired checkpoint (the new root child is just unused there).
    import tensorflow as tf

    again = _keras_model(tf.keras.optimizers.legacy.SGD(0.1))
    again.load_weights(new_prefix).expect_partial()
    np.testing.assert_allclose(again.predict(_X, verbose=0), keras_predictions, atol=1e-6)
    # The same command again: healthy, no second repair, a second export.
    second, _ = _fix_and_predict(model_dir, tmp_path, "--step=3")
    assert second["repair"] is None and second["verify"]["ok"]
