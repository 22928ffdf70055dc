"""verify on the kinds of model met in the field, each trained for real (a few steps).

- Signature outputs are paired with ``Estimator.predict`` keys through the model's graph, not
  by name: canned KMeans (``output`` under signatures named after the keys), a single-tensor
  ``PredictOutput``, ``ClassificationOutput``/``RegressionOutput`` under other keys, an output
  that is no prediction (listed, not compared), and a mismatch that still rejects.
- Variables pinned to devices this machine lacks (``/cpu:1``, ``/gpu:0``) load as Serving
  loads them, on both sides, even with a user session config without soft placement.
- Models whose predictions ignore the input (Baseline*, a constant) verify instead of hanging,
  and user code that never returns ends in one line within its time limit, on the main thread
  (a signal) and on another one (an asynchronous exception), in Python and in a TensorFlow op.

Model code is ``tests/field_models.py``, loaded by path as the CLI loads a user's file.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimator_fix import errors
from estimator_fix import export as export_lib
from estimator_fix.model_code import deadline, userspec
from estimator_fix.verify import VerifyResult, verify
from tests.conftest import REPO, TESTDATA

MODELS = REPO / "tests" / "field_models.py"
TESTDATA_MODELS = TESTDATA / "models.py"
LIMIT = 2.0  # seconds: the time limit of the tests that must time out
BOUND = 20.0  # seconds: they must end well before this, or nothing was bounded


def _attr(name: str, path: Path = MODELS) -> Any:
    return userspec.load_attr(f"{path}:{name}", flag="--test")


@dataclasses.dataclass(frozen=True)
class Trained:
    model_dir: Path
    estimator: Any
    export_path: str
    checkpoint: str  # the prefix exported
    earlier: str  # an earlier checkpoint of the same model


def _estimator(kind: str, model_dir: Path, params: dict[str, Any] | None = None) -> Any:
    """``kind`` is a builder of field_models.py, or a model_fn (``*_model_fn``)."""
    import tensorflow as tf

    if kind.endswith("_model_fn"):
        return tf.estimator.Estimator(
            _attr(kind), model_dir=str(model_dir), params=params, config=_attr("run_config")()
        )
    return userspec.build_estimator(
        userspec.ModelSpec(estimator=f"{MODELS}:{kind}"), str(model_dir)
    )


def _train_and_export(
    root: Path, kind: str, input_fn: str, receiver: str, params: dict[str, Any] | None = None
) -> Trained:
    """Trains 1 step, then 2 more (two checkpoints), and exports the last with ``receiver``."""
    import tensorflow as tf

    tag = "-".join([kind, *(str(v).strip("/").replace(":", "") for v in (params or {}).values())])
    model_dir = root / tag
    estimator = _estimator(kind, model_dir, params)
    estimator.train(_attr(input_fn), steps=1)
    earlier = tf.train.latest_checkpoint(str(model_dir))
    estimator.train(_attr(input_fn), steps=2)
    checkpoint = tf.train.latest_checkpoint(str(model_dir))
    assert earlier and checkpoint and earlier != checkpoint
    raw = estimator.export_saved_model(
        str(root / f"export-{tag}"), _attr(receiver), checkpoint_path=checkpoint
    )
    return Trained(model_dir, estimator, raw.decode(), checkpoint, earlier)


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Trained]]:
    """Trains and exports each (kind, input, receiver, params) at most once per session."""
    root = tmp_path_factory.mktemp("verify-field")
    cache: dict[str, Trained] = {}

    def get(kind: str, input_fn: str, receiver: str = "serving_input_fn", **params: Any) -> Trained:
        key = json.dumps([kind, input_fn, receiver, params], sort_keys=True)
        if key not in cache:
            cache[key] = _train_and_export(root, kind, input_fn, receiver, params or None)
        return cache[key]

    yield get


def _pairs(result: VerifyResult) -> set[tuple[str, str, str | None, str]]:
    return {(p.signature, p.output, p.prediction_key, p.paired_by) for p in result.parity}


def _one_line(error: BaseException, *needles: str) -> str:
    message = str(error)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


# --- Pairing signature outputs with prediction keys. -----------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("with_receiver", [True, False], ids=["receiver", "predict-features"])
def test_kmeans_outputs_pair_with_their_prediction_keys(
    with_receiver: bool, trained: Callable[..., Trained]
) -> None:
    t = trained("kmeans", "features_input_fn")
    result = verify(
        t.export_path,
        estimator=t.estimator,
        checkpoint_path=t.checkpoint,
        serving_input_fn=_attr("serving_input_fn") if with_receiver else None,
    )
    assert result.ok, result.checks
    assert _pairs(result) == {
        ("all_distances", "output", "all_distances", "tensor"),
        ("cluster_index", "output", "cluster_index", "tensor"),
        ("serving_default", "output", "cluster_index", "tensor"),
    }
    assert all(p.ok for p in result.parity), result.checks
    doc = json.loads(json.dumps(result.to_dict()))
    assert {row["paired_by"] for row in doc["parity"]} == {"tensor"}


@pytest.mark.slow
def test_kmeans_against_an_earlier_checkpoint_is_a_mismatch(
    trained: Callable[..., Trained],
) -> None:
    t = trained("kmeans", "features_input_fn")
    result = verify(
        t.export_path,
        estimator=t.estimator,
        checkpoint_path=t.earlier,
        require_step_match=False,
    )
    assert not result.ok
    [distances] = [p for p in result.parity if p.signature == "all_distances"]
    assert distances.prediction_key == "all_distances" and distances.ok is False
    assert any(line.startswith("MISMATCH all_distances/output") for line in result.checks)


@pytest.mark.slow
@pytest.mark.parametrize("with_receiver", [True, False], ids=["receiver", "predict-features"])
def test_every_kind_of_export_output(with_receiver: bool, trained: Callable[..., Trained]) -> None:
    t = trained("multi_head_model_fn", "values_input_fn", "parsing_serving_input_fn")
    result = verify(
        t.export_path,
        estimator=t.estimator,
        checkpoint_path=t.checkpoint,
        serving_input_fn=_attr("parsing_serving_input_fn") if with_receiver else None,
    )
    assert result.ok, result.checks
    assert _pairs(result) == {
        ("serving_default", "output", "ids", "tensor"),  # PredictOutput(tensor)
        ("scores", "scores", "probs", "tensor"),  # ClassificationOutput
        ("value", "outputs", "reg", "tensor"),  # RegressionOutput
        ("both", "p", "probs", "tensor"),
        ("both", "doubled", None, ""),  # value * 2: no prediction is this tensor
    }
    [doubled] = [p for p in result.parity if p.output == "doubled"]
    assert doubled.ok is None and "none of the model_fn's predictions" in doubled.note
    assert any(line.startswith("not compared both/doubled: its tensor") for line in result.checks)


@pytest.mark.slow
def test_fix_exports_kmeans_and_keeps_it(trained: Callable[..., Trained], tmp_path: Path) -> None:
    """The whole command on a healthy KMeans directory: verified, not renamed rejected-."""
    from estimator_fix import fix
    from estimator_fix.options import Job

    t = trained("kmeans", "features_input_fn")
    model_dir = tmp_path / "kmeans"
    shutil.copytree(t.model_dir, model_dir, ignore=shutil.ignore_patterns("export*"))
    job = Job(
        "fix",
        str(model_dir),
        estimator=f"{MODELS}:kmeans",
        serving_input_fn=f"{MODELS}:serving_input_fn",
        export_dir=str(tmp_path / "export"),
    )
    result = fix.fix(job)
    assert result.ok and result.verify is not None and result.export_path is not None
    assert {p.paired_by for p in result.verify.parity} == {"tensor"}
    assert [p.name for p in (tmp_path / "export").iterdir()] == [Path(result.export_path).name]


# --- Devices: load as Serving does. ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("device", ["/cpu:1", "/gpu:0"])
@pytest.mark.parametrize("soft_placement", [True, False], ids=["default-config", "strict-config"])
def test_variables_pinned_to_another_device(
    device: str, soft_placement: bool, trained: Callable[..., Trained], tmp_path: Path
) -> None:
    import tensorflow as tf

    t = trained("pinned_model_fn", "values_input_fn", device=device)
    estimator = t.estimator
    if not soft_placement:  # the user's own RunConfig: no soft placement for predict or export
        strict = tf.estimator.RunConfig(session_config=tf.compat.v1.ConfigProto())
        estimator = tf.estimator.Estimator(
            _attr("pinned_model_fn"), str(t.model_dir), params={"device": device}, config=strict
        )
        with pytest.raises(tf.errors.InvalidArgumentError, match="Restoring from checkpoint"):
            next(estimator.predict(lambda: tf.data.Dataset.from_tensors({"x": [[1.0, 2.0]]})))
    exported = export_lib.export(
        estimator, _attr("serving_input_fn"), str(tmp_path / "export"), t.checkpoint
    )
    for path in (t.export_path, exported.export_path):
        result = verify(path, estimator=estimator, checkpoint_path=t.checkpoint)
        assert result.ok, result.checks
        assert _pairs(result) == {("serving_default", "value", "value", "tensor")}
    assert estimator._session_config.allow_soft_placement is soft_placement  # left as it was


# --- Predictions that ignore the input. -----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "input_fn"),
    [
        ("baseline_classifier", "classes_input_fn"),
        ("baseline_regressor", "values_input_fn"),
        ("constant_model_fn", "features_input_fn"),
    ],
)
def test_predictions_that_ignore_the_input_verify(
    kind: str, input_fn: str, trained: Callable[..., Trained]
) -> None:
    t = trained(kind, input_fn)
    start = time.monotonic()
    # The limit turns a regression (predict never ending) into a failure instead of a hang.
    result = verify(t.export_path, estimator=t.estimator, checkpoint_path=t.checkpoint, timeout=120)
    assert time.monotonic() - start < 120
    assert result.ok, result.checks
    compared = [p for p in result.parity if p.ok]
    assert compared and all(p.paired_by == "tensor" for p in compared)
    if kind != "constant_model_fn":
        assert all(p.shape[0] == result.num_examples for p in compared)


# --- Time limits. ---------------------------------------------------------------------------


def _on_another_thread(call: Callable[[], None]) -> Callable[[], None]:
    """``call`` run on a new thread (as Beam runs work); its error re-raised here."""

    def run() -> None:
        outcome: list[BaseException] = []

        def target() -> None:
            try:
                call()
            except BaseException as e:
                outcome.append(e)

        worker = threading.Thread(target=target)
        start = time.monotonic()
        worker.start()
        worker.join(BOUND * 2)
        assert not worker.is_alive(), "the call on the other thread was not bounded"
        assert time.monotonic() - start < BOUND
        if outcome:
            raise outcome[0]

    return run


def _bounded(call: Callable[[], Any], *needles: str) -> str:
    start = time.monotonic()
    with pytest.raises(deadline.UserCodeTimeoutError) as info:
        call()
    assert time.monotonic() - start < BOUND
    assert info.value.exit_code == errors.EXIT_EXPORT_FAILED
    return _one_line(info.value, f"within {LIMIT:g} s", "--timeout=SECONDS", *needles)


@pytest.mark.slow
@pytest.mark.parametrize("stuck", ["sleep", "loop", "while_loop"])
@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "other-thread"])
def test_predict_that_never_returns_times_out(
    stuck: str, thread: bool, trained: Callable[..., Trained]
) -> None:
    if thread and stuck == "sleep":
        pytest.skip("off the main thread a blocking C call is interrupted only once it returns")
    t = trained("stuck_model_fn", "values_input_fn")
    estimator = _estimator("stuck_model_fn", t.model_dir, {"stuck": stuck})

    def call() -> None:
        verify(t.export_path, estimator=estimator, checkpoint_path=t.checkpoint, timeout=LIMIT)

    if thread:
        call = _on_another_thread(call)
    where = "" if stuck == "while_loop" else f"{MODELS}:"
    _bounded(call, "Estimator.predict did not finish", where)
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_estimator_factory_that_never_returns(tmp_path: Path) -> None:
    _bounded(
        lambda: userspec.build_estimator(
            userspec.ModelSpec(estimator=f"{MODELS}:slow_estimator"), str(tmp_path), timeout=LIMIT
        ),
        f"--estimator={MODELS}:slow_estimator did not finish",
        "in slow_estimator",
    )


@pytest.fixture
def custom_copy(tmp_path: Path) -> tuple[Any, str]:
    """The frozen custom_model_fn fixture's Estimator and checkpoint (no training)."""
    model_dir = tmp_path / "custom_model_fn"
    shutil.copytree(TESTDATA / "custom_model_fn", model_dir)
    spec = userspec.ModelSpec(estimator=f"{TESTDATA_MODELS}:custom_estimator")
    return userspec.build_estimator(spec, str(model_dir)), str(model_dir / "model.ckpt-6")


def test_serving_input_fn_that_never_returns(custom_copy: tuple[Any, str]) -> None:
    estimator, checkpoint = custom_copy
    _bounded(
        lambda: export_lib.preflight(
            estimator, _attr("slow_serving_input_fn"), checkpoint, timeout=LIMIT
        ),
        "the serving input function did not finish",
        "in slow_serving_input_fn",
    )


def test_model_fn_that_never_returns_in_preflight_and_export(
    custom_copy: tuple[Any, str], tmp_path: Path
) -> None:
    import tensorflow as tf

    _, checkpoint = custom_copy
    stuck = tf.estimator.Estimator(
        _attr("stuck_model_fn"), str(tmp_path / "stuck"), params={"stuck": "sleep"}
    )
    receiver = _attr("serving_input_fn")
    _bounded(
        lambda: export_lib.preflight(stuck, receiver, checkpoint, timeout=LIMIT),
        "model_fn did not finish",
        "in stuck_model_fn",
    )
    passed = export_lib.Preflight(checkpoint, "predict", 0, (), (), False, False)
    base = tmp_path / "export"
    _bounded(
        lambda: export_lib.export(
            stuck, receiver, str(base), checkpoint, checked=passed, timeout=LIMIT
        ),
        "export_saved_model did not finish",
    )
    assert not base.exists() or not list(base.iterdir())  # no temp-<ts> folder left


def test_a_limit_that_is_not_reached_leaves_nothing_behind() -> None:
    with deadline.deadline(0.3, "a quick call"):
        value = sum(range(1000))
    time.sleep(0.6)  # an alarm left armed would raise here
    assert value == 499500
    assert signal.getsignal(signal.SIGALRM) == signal.SIG_DFL
    with deadline.deadline(None, "no limit"), deadline.deadline(0, "no limit either"):
        time.sleep(0.05)


@pytest.mark.parametrize("value", [-1, float("nan"), "ten"])
def test_bad_timeout_is_a_usage_error(value: Any) -> None:
    with pytest.raises(errors.UsageError, match="--timeout="):
        verify(str(REPO / "no-such-export"), timeout=value)


def test_user_code_that_raises_is_still_its_error() -> None:
    with pytest.raises(errors.UserCodeError) as info, userspec.user_code("model_fn", timeout=LIMIT):
        np.asarray([1]).reshape(7)
    assert not isinstance(info.value, deadline.UserCodeTimeoutError)
    _one_line(info.value, "model_fn raised ValueError")
