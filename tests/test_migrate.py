"""migrate: v1 canned -> v2 canned, ExponentialMovingAverage shadows, TF2 object-based layout.

Real Estimators: each v1 case trains 3 steps once (session-scoped); the migrated checkpoint is
restored by the v2 estimator of the same kind, which must predict exactly what v1 predicted,
hold the trained hyperparameters, and train step 4 to the weights v1's own step 4 gives.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import read_checkpoint, tree_digest

STEPS = 3
_ROWS = 16


def _data() -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.RandomState(0)
    x = rng.uniform(-1, 1, (_ROWS, 3)).astype(np.float32)
    c = rng.randint(0, 5, (_ROWS, 1)).astype(np.int64)
    return {"x": x, "c": c}, (x.sum(axis=1) > 0).astype(np.int64)


def _train_input() -> Any:
    import tensorflow as tf

    features, labels = _data()
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(8).repeat()


def _predict_input() -> Any:
    import tensorflow as tf

    return tf.data.Dataset.from_tensor_slices(_data()[0]).batch(_ROWS)


def _columns() -> tuple[list[Any], list[Any]]:
    """(linear columns, dnn columns): the categorical column is sparse for the linear model."""
    import tensorflow as tf

    x = tf.feature_column.numeric_column("x", shape=(3,))
    c = tf.feature_column.categorical_column_with_identity("c", 5)
    return [x, c], [x, tf.feature_column.indicator_column(c)]


def _opts(v1: bool) -> dict[str, Any]:
    """Each case's optimizers: v1 as a name or a ``tf.compat.v1.train`` instance; v2 as the
    user would write them, with default hyperparameters (the checkpoint restores the trained
    ones) and the constructor arguments the migration's notes ask for."""
    import tensorflow as tf

    t, k = tf.compat.v1.train, tf.keras.optimizers.legacy
    if v1:
        return {
            "dnn-adagrad": "Adagrad",
            "dnn-adam": lambda: t.AdamOptimizer(0.02, beta1=0.8, beta2=0.99, epsilon=1e-6),
            "dnn-ftrl": lambda: t.FtrlOptimizer(
                0.1, l1_regularization_strength=0.01, l2_regularization_strength=0.02, beta=0.5
            ),
            "dnn-rmsprop": "RMSProp",
            "dnn-sgd": "SGD",
            "dnn-momentum": lambda: t.MomentumOptimizer(0.03, 0.9, use_nesterov=True),
            "linear-adagrad": lambda: t.AdagradOptimizer(0.3),
            "linear-adam": "Adam",
            "linear-ftrl": "Ftrl",
            "linear-rmsprop": lambda: t.RMSPropOptimizer(
                0.02, decay=0.8, momentum=0.5, centered=True
            ),
            "linear-sgd": lambda: t.GradientDescentOptimizer(0.1),
            "linear-momentum": lambda: t.MomentumOptimizer(0.05, 0.8),
            "combined-default": ("Ftrl", "Adagrad"),
            "combined-adam-partitioned": (
                lambda: t.AdamOptimizer(0.03, beta1=0.7),
                lambda: t.AdamOptimizer(0.01),
            ),
            "combined-sgd-momentum": ("SGD", lambda: t.MomentumOptimizer(0.02, 0.7)),
        }
    return {
        "dnn-adagrad": "Adagrad",
        "dnn-adam": lambda: k.Adam(epsilon=1e-6),
        "dnn-ftrl": "Ftrl",
        "dnn-rmsprop": lambda: k.RMSprop(epsilon=1e-10),
        "dnn-sgd": "SGD",
        "dnn-momentum": lambda: k.SGD(momentum=0.5, nesterov=True),
        "linear-adagrad": "Adagrad",
        "linear-adam": lambda: k.Adam(epsilon=1e-8),
        "linear-ftrl": "Ftrl",
        "linear-rmsprop": lambda: k.RMSprop(momentum=0.1, centered=True, epsilon=1e-10),
        "linear-sgd": "SGD",
        "linear-momentum": lambda: k.SGD(momentum=0.5),
        "combined-default": ("Ftrl", "Adagrad"),
        "combined-adam-partitioned": (lambda: k.Adam(epsilon=1e-8), lambda: k.Adam(epsilon=1e-8)),
        "combined-sgd-momentum": ("SGD", lambda: k.SGD(momentum=0.5)),
    }


CASES = [
    "dnn-adagrad", "dnn-adam", "dnn-ftrl", "dnn-rmsprop", "dnn-sgd", "dnn-momentum",
    "linear-adagrad", "linear-adam", "linear-ftrl", "linear-rmsprop", "linear-sgd",
    "linear-momentum", "combined-default", "combined-adam-partitioned", "combined-sgd-momentum",
]  # fmt: skip
# checkpoint_converter handles these (its optimizers, default names, two different ones).
CONVERTER_CASES = [
    "dnn-adagrad", "dnn-adam", "dnn-ftrl", "dnn-rmsprop", "dnn-sgd", "linear-adagrad",
    "linear-adam", "linear-ftrl", "linear-sgd", "combined-default",
]  # fmt: skip


def _estimator(case: str, model_dir: Path, *, v1: bool) -> Any:
    import tensorflow as tf

    ns = tf.compat.v1.estimator if v1 else tf.estimator
    kind = case.split("-", 1)[0]
    opt = _opts(v1)[case]
    linear, dnn = _columns()
    config = tf.estimator.RunConfig(tf_random_seed=1)
    common: dict[str, Any] = {"model_dir": str(model_dir), "config": config}
    if not v1:  # v1 canned estimators sum the loss; continuing needs the same gradient scale
        common["loss_reduction"] = tf.losses.Reduction.SUM
    if kind == "dnn":
        return ns.DNNClassifier(hidden_units=[4, 3], feature_columns=dnn, optimizer=opt, **common)
    if kind == "linear":
        return ns.LinearRegressor(feature_columns=linear, optimizer=opt, **common)
    extra = {}
    if v1 and "partitioned" in case:
        extra["input_layer_partitioner"] = tf.compat.v1.fixed_size_partitioner(2)
    return ns.DNNLinearCombinedClassifier(
        linear_feature_columns=linear,
        dnn_feature_columns=dnn,
        dnn_hidden_units=[4],
        linear_optimizer=opt[0],
        dnn_optimizer=opt[1],
        **common,
        **extra,
    )


def _predict(est: Any) -> np.ndarray:
    out = list(est.predict(_predict_input, yield_single_examples=False))
    key = "logits" if "logits" in out[0] else "predictions"
    return np.concatenate([o[key] for o in out])


@pytest.fixture(scope="session")
def v1_dirs(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """case -> a v1 model directory trained STEPS steps (each trained once, on first use)."""
    import tensorflow as tf

    tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
    made: dict[str, Path] = {}

    def get(case: str) -> Path:
        if case not in made:
            random.seed(1)
            d = tmp_path_factory.mktemp("v1") / case
            _estimator(case, d, v1=True).train(_train_input, steps=STEPS)
            made[case] = d
        return made[case]

    return get


def _migrate(src: Path, out: Path, to: str) -> Any:
    from estimator_fix import migrate, scan, surgery

    report = scan.scan(str(src))
    edit = migrate.plan_migration(report, to=to, model_dir=str(src))
    return surgery.apply(report, edit, output_dir=str(out))


def _lr_keys(prefix: str) -> dict[str, float]:
    return {
        k: float(v[2]) for k, v in read_checkpoint(prefix).items() if k.endswith("/learning_rate")
    }


def _v1_learning_rates(src: Path) -> list[float]:
    from estimator_fix import scan
    from estimator_fix.migrate import graphdef

    graph = graphdef.load(scan.scan(str(src)))
    rates = {graph.constant(u.hypers.get("lr") or u.hypers["alpha"]) for u in graph.updates()}
    return sorted(r for r in rates if r is not None)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_v2_predicts_keeps_rates_and_trains_on(
    case: str, v1_dirs: Callable[[str], Path], tmp_path: Path
) -> None:
    import tensorflow as tf

    src = v1_dirs(case)
    before = tree_digest(src)
    result = _migrate(src, tmp_path / "v2", "v2-canned")
    assert tree_digest(src) == before  # the original directory is untouched
    assert result.linked and result.new_bytes < 64 * 1024

    v1_est = _estimator(case, src, v1=True)
    v2_est = _estimator(case, tmp_path / "v2", v1=False)
    np.testing.assert_array_equal(_predict(v2_est), _predict(v1_est))

    # Step N -> N+1 in v2 lands where v1's own step N+1 does (from a copy of the source).
    v2_est.train(_train_input, steps=1)
    v1_copy = tmp_path / "v1"
    shutil.copytree(src, v1_copy)
    _estimator(case, v1_copy, v1=True).train(_train_input, steps=1)
    v2_ckpt = tf.train.latest_checkpoint(str(tmp_path / "v2"))
    v1_ckpt = tf.train.latest_checkpoint(str(v1_copy))
    assert v2_ckpt.endswith(f"-{STEPS + 1}") and v1_ckpt.endswith(f"-{STEPS + 1}")
    v2_values, v1_values = read_checkpoint(v2_ckpt), read_checkpoint(v1_ckpt)
    model_keys = [k for k in v1_values if k.split("/")[0] in ("dnn", "linear") and k in v2_values]
    assert len(model_keys) >= 3
    for key in model_keys:
        np.testing.assert_allclose(
            v2_values[key][2], v1_values[key][2], rtol=1e-4, atol=1e-6, err_msg=key
        )
    # The trained learning rates survive training in v2 (the Keras defaults would differ).
    assert sorted(_lr_keys(v2_ckpt).values()) == pytest.approx(_v1_learning_rates(src))


@pytest.mark.slow
@pytest.mark.parametrize("case", CONVERTER_CASES)
def test_against_checkpoint_converter(
    case: str, v1_dirs: Callable[[str], Path], tmp_path: Path
) -> None:
    """Equal wherever both write a tensor, except the hyperparameters checkpoint_converter
    does not read from the graph (it writes the Keras defaults) and Adam's betas (it takes
    beta_power ** (1 / step), which is beta ** ((step + 1) / step))."""
    import tensorflow as tf
    from tensorflow_estimator.python.estimator.tools import checkpoint_converter

    src = v1_dirs(case)
    source = tf.train.latest_checkpoint(str(src))
    kind = {"dnn": "dnn", "linear": "linear", "combined": "combined"}[case.split("-")[0]]
    (tmp_path / "conv").mkdir()
    theirs_prefix = str(tmp_path / "conv" / Path(source).name)
    with tf.Graph().as_default():
        checkpoint_converter.convert_checkpoint(
            kind, source, str(src / "graph.pbtxt"), theirs_prefix
        )
    ours = read_checkpoint(_migrate(src, tmp_path / "ours", "v2-canned").new_prefix)
    theirs = read_checkpoint(theirs_prefix)
    # Beyond ours it writes only copies of v1 slots under their old names (for DNNLinearCombined
    # each optimizer's pass copies the other one's slots as if they were weights).
    assert set(theirs) - set(ours) <= set(read_checkpoint(source)) - set(ours)
    both = sorted(set(theirs) & set(ours))
    assert len(both) >= len(ours) - 1  # all but a combined linear optimizer's derived iter
    lost = sorted(k for k in both if not np.allclose(theirs[k][2], ours[k][2], rtol=1e-6))
    slots_or_weights = [k for k in lost if k.rsplit("/", 1)[-1] not in _HYPERS]
    assert slots_or_weights == []
    assert any(k.endswith("/learning_rate") for k in lost)
    if "adam" in case:
        assert "training/Adam/beta_1" in lost


_HYPERS = {
    "learning_rate", "decay", "beta_1", "beta_2", "rho", "momentum", "beta",
    "learning_rate_power", "l1_regularization_strength", "l2_regularization_strength", "iter",
}  # fmt: skip


# --- refusals: one line, nothing written ----------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "to", "error", "says"),
    [
        ("dnn_linear_partitioned", "v2-canned", "NotRepairableError", "graph.pbtxt"),
        ("dnn_classifier", "v2-canned", "UsageError", "already has v2 optimizer keys"),
        ("custom_model_fn", "v2-canned", "NotRepairableError", "not a canned"),
        ("dnn_classifier", "ema", "NotRepairableError", "ExponentialMovingAverage"),
        ("keras_object_based", "tf2-object", "UsageError", "already an object-based"),
        ("dnn_classifier", "keras", "UsageError", "not a migration target"),
    ],
)
def test_refusals(
    fixture: str, to: str, error: str, says: str, model_copy: Callable[[str], Path]
) -> None:
    from estimator_fix import errors, migrate, scan

    src = model_copy(fixture)
    before = tree_digest(src)
    with pytest.raises(errors.Error) as e:
        migrate.plan_migration(scan.scan(str(src)), to=to, model_dir=str(src))
    assert type(e.value).__name__ == error
    assert says in str(e.value) and "\n" not in str(e.value)
    assert tree_digest(src) == before


# --- ExponentialMovingAverage -------------------------------------------------------------


def _ema_model_fn(features: Any, labels: Any, mode: str) -> Any:
    import tensorflow as tf

    v1 = tf.compat.v1
    w = v1.get_variable("dense/kernel", [3, 1], initializer=v1.glorot_uniform_initializer(seed=1))
    b = v1.get_variable("dense/bias", [1], initializer=v1.zeros_initializer())
    out = tf.matmul(features["x"], w) + b
    if mode == tf.estimator.ModeKeys.PREDICT:
        return tf.estimator.EstimatorSpec(mode, predictions={"y": out})
    loss = v1.losses.mean_squared_error(tf.reshape(labels, [-1, 1]), out)
    train = v1.train.GradientDescentOptimizer(0.3).minimize(
        loss, global_step=v1.train.get_or_create_global_step()
    )
    with tf.control_dependencies([train]):
        train_op = v1.train.ExponentialMovingAverage(0.5).apply([w, b])
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def _ema_train_input() -> Any:
    import tensorflow as tf

    features, _ = _data()
    y = features["x"].sum(axis=1).astype(np.float32) + 1.0
    return tf.data.Dataset.from_tensor_slices(({"x": features["x"]}, y)).batch(8).repeat()


@pytest.mark.slow
def test_ema_serves_the_averaged_model(tmp_path: Path) -> None:
    import tensorflow as tf

    src, out = tmp_path / "ema", tmp_path / "served"
    tf.estimator.Estimator(_ema_model_fn, model_dir=str(src)).train(_ema_train_input, steps=STEPS)
    source = read_checkpoint(tf.train.latest_checkpoint(str(src)))
    result = _migrate(src, out, "ema")
    assert result.linked and not result.added
    x = _data()[0]["x"]
    shadow = {k: source[f"{k}/ExponentialMovingAverage"][2] for k in ("dense/kernel", "dense/bias")}
    averaged = x @ shadow["dense/kernel"] + shadow["dense/bias"]
    raw = x @ source["dense/kernel"][2] + source["dense/bias"][2]
    assert not np.allclose(averaged, raw)

    est = tf.estimator.Estimator(_ema_model_fn, model_dir=str(out))
    predicted = np.concatenate(
        [p["y"] for p in est.predict(_predict_input, yield_single_examples=False)]
    )
    np.testing.assert_allclose(predicted, averaged, rtol=1e-5, atol=1e-6)

    def receiver() -> Any:
        x = tf.compat.v1.placeholder(tf.float32, [None, 3], name="x")
        return tf.estimator.export.ServingInputReceiver({"x": x}, {"x": x})

    export = est.export_saved_model(str(tmp_path / "export"), receiver)
    served = tf.saved_model.load(export.decode()).signatures["serving_default"](x=tf.constant(x))
    np.testing.assert_allclose(served["y"].numpy(), predicted, rtol=0, atol=0)

    migrated = read_checkpoint(result.new_prefix)
    for key in shadow:
        np.testing.assert_array_equal(migrated[f"{key}/NonAveraged"][2], source[key][2])
        assert f"{key}/ExponentialMovingAverage" not in migrated
    assert int(migrated["global_step"][2]) == STEPS


# --- TF2 object-based ------------------------------------------------------------------------


def _restore_into_fresh_variables(source_prefix: str, new_prefix: str) -> None:
    """Eager TF2: one zero variable per source key, restored by ``Checkpoint(vars=...)``."""
    import tensorflow as tf

    source = read_checkpoint(source_prefix)
    fresh = {k: tf.Variable(tf.zeros(shape, dtype)) for k, (dtype, shape, _) in source.items()}
    ckpt = tf.train.Checkpoint(vars=fresh)
    ckpt.restore(new_prefix).assert_consumed()
    assert int(ckpt.save_counter.numpy()) == 1
    for key, variable in fresh.items():
        np.testing.assert_array_equal(variable.numpy(), source[key][2], err_msg=key)


def test_tf2_object_restores_in_eager_code(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    """A v1 DNNLinearCombined with 2-slice partitioned variables over 2 data shards."""
    import tensorflow as tf

    src = model_copy("dnn_linear_partitioned")
    result = _migrate(src, tmp_path / "tf2", "tf2-object")
    assert result.linked
    _restore_into_fresh_variables(tf.train.latest_checkpoint(str(src)), result.new_prefix)


@pytest.mark.slow
def test_tf2_object_of_a_trained_v1_dnn(v1_dirs: Callable[[str], Path], tmp_path: Path) -> None:
    import tensorflow as tf

    src = v1_dirs("dnn-adam")
    result = _migrate(src, tmp_path / "tf2", "tf2-object")
    _restore_into_fresh_variables(tf.train.latest_checkpoint(str(src)), result.new_prefix)


def test_tf2_object_graph_is_tensorflows(tmp_path: Path) -> None:
    """The graph written is the one ``Checkpoint(vars=...).save`` writes for the same names."""
    import tensorflow as tf
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    from estimator_fix.migrate import tf2_object

    names = ["a", "dnn/logits/kernel", "odd.name/x", "global_step"]
    variables = {n: tf.Variable(float(i)) for i, n in enumerate(names)}
    path = tf.train.Checkpoint(vars=variables).save(str(tmp_path / "ref"))
    reader = tf.train.load_checkpoint(path)
    expected = trackable_object_graph_pb2.TrackableObjectGraph()
    expected.ParseFromString(reader.get_tensor("_CHECKPOINTABLE_OBJECT_GRAPH"))
    ours = trackable_object_graph_pb2.TrackableObjectGraph()
    ours.ParseFromString(tf2_object.object_graph(names))
    for graph in (expected, ours):
        for node in graph.nodes:
            for attr in node.attributes:
                attr.full_name = ""
    assert ours == expected
    keys = set(reader.get_variable_to_shape_map()) - {"_CHECKPOINTABLE_OBJECT_GRAPH"}
    assert keys == {tf2_object.object_key(n) for n in names} | {
        "save_counter/.ATTRIBUTES/VARIABLE_VALUE"
    }
