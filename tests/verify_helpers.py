"""Helpers shared by the test_verify_* modules: real exports of the frozen fixtures.

Each healthy fixture is copied and exported ONCE per session (real
``Estimator.export_saved_model`` from ``model.ckpt-6``) by the session-scoped ``exported``
(raw-tensor serving receivers) and ``exported_parsing`` (tf.Example receivers) fixtures. The
test modules register this module with ``pytest_plugins`` so all of them share those fixtures.
Also here: the literal ``PREDICT_FEATURES`` of ``testdata/models.py``, the parity check, the
comparison with the predictions recorded in ``MANIFEST.json`` and the one-line error check.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimator_fix import errors
from estimator_fix.model_code import userspec
from estimator_fix.verify import VerifyResult
from tests.conftest import TESTDATA, manifest

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
