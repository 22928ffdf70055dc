"""The user's Estimator and serving input function, built from the SPECs of a ``Job``.

The Estimator is always built over a scratch ``model_dir`` (removed by the caller through
``LoadedModel.scratch_dir``) and the checkpoint is always passed to it explicitly, so neither
the Estimator nor a Keras ``model_to_estimator`` writes into the user's directories.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from estimator_fix import errors
from estimator_fix.model_code import serving, userspec
from estimator_fix.model_code.deadline import DEFAULT_TIMEOUT_SECONDS
from estimator_fix.model_code.serving import ServingSpec
from estimator_fix.storage import fs


def load_serving_input_fn(
    spec: ServingSpec, *, timeout: float | None = DEFAULT_TIMEOUT_SECONDS
) -> Callable[[], Any]:
    """The serving input function from a SPEC or a features file.

    Raises:
      errors.UsageError: neither or both given, or a bad SPEC.
      errors.InputError: the features file is missing or invalid.
    """
    if (spec.input_fn is None) == (spec.features is None):
        raise errors.UsageError("pass exactly one of --serving_input_fn and --serving_features")
    if spec.input_fn is not None:
        return userspec.load_callable(spec.input_fn, flag="--serving_input_fn", timeout=timeout)
    assert spec.features is not None
    path = fs.normalize(spec.features)
    features = serving.parse_features(fs.read_text(path), path=path)
    return serving.serving_input_fn(features, spec.format, path=path)


@dataclasses.dataclass(frozen=True)
class LoadedModel:
    estimator: Any
    serving_input_fn: Callable[[], Any]  # a stub that raises when none was asked for
    scratch_dir: str

    def close(self) -> None:
        """Removes the scratch ``model_dir``."""
        shutil.rmtree(self.scratch_dir, ignore_errors=True)


def _no_serving_input_fn() -> Any:
    raise errors.UsageError("no serving input function was given")


def load_model(
    model: userspec.ModelSpec,
    serving_spec: ServingSpec | None,
    *,
    timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
) -> LoadedModel:
    """Builds the user's Estimator over a scratch model_dir (see the module docstring).

    ``timeout`` bounds each call into the user's code (importing it, building the Estimator).

    Raises:
      errors.UsageError, errors.UserCodeError: a bad SPEC, or the user's code raised.
    """
    serving_input_fn = (
        load_serving_input_fn(serving_spec, timeout=timeout)
        if serving_spec is not None
        else _no_serving_input_fn
    )
    scratch = tempfile.mkdtemp(prefix="estimator-fix-model-")
    try:
        estimator = userspec.build_estimator(model, scratch, timeout=timeout)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return LoadedModel(estimator, serving_input_fn, scratch)
