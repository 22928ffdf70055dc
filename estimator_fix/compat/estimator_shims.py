"""tensorflow-estimator 2.15.0 on TensorFlow >= 2.16: what 2.16 took away, put back.

tensorflow-estimator is pure Python. On TensorFlow 2.21 it fails at import for want of eleven
private names; every other private module it imports is still there (``tests/test_runtime.py``
checks each of its imports against the installed TensorFlow, so a release that removes more
fails that test, not a user's export). What is put back:

* ``tensorflow.python.distribute.estimator_training`` (imported by ``estimator.py``,
  ``run_config.py`` and ``training.py``): the distribute coordinator's glue. Its local path is
  reproduced (a ``RunConfig`` without a multi-worker strategy, every export, predict and
  single-process train); the coordinator's multi-worker modes refuse in one line naming the
  runtime that has them.
* ``tensorflow.python.tpu.session_support``, ``tpu_embedding`` (with its seven
  ``*Parameters`` classes) and ``tpu_embedding_gradient`` (imported by ``tpu_estimator.py``,
  which ``tf.estimator`` loads eagerly): placeholders whose every function and class refuses
  when called. TPUEstimator's TPU paths need TensorFlow 2.15.
* ``tf.estimator``, ``tf.compat.v1.estimator`` and ``tf.compat.v2.estimator``: lazy modules, as
  TensorFlow 2.15 wires them, so ``import tensorflow`` does not pay for the Estimator until it
  is used.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from estimator_fix import compat

_V1_API = "tensorflow_estimator.python.estimator.api._v1.estimator"
_V2_API = "tensorflow_estimator.python.estimator.api._v2.estimator"
_EMBEDDING_PARAMETERS = (
    "AdagradParameters",
    "AdamParameters",
    "FtrlParameters",
    "MomentumParameters",
    "ProximalAdagradParameters",
    "RMSPropParameters",
    "StochasticGradientDescentParameters",
)

# The names this module adds, by module: what tests/test_runtime.py checks per TF version.
SHIMMED_MODULES = (
    "tensorflow.python.distribute.estimator_training",
    "tensorflow.python.tpu.session_support",
    "tensorflow.python.tpu.tpu_embedding",
    "tensorflow.python.tpu.tpu_embedding_gradient",
)


def install(tf: types.ModuleType) -> None:
    """Registers the missing modules and the ``estimator`` attributes; idempotent.

    A module TensorFlow still has is never replaced.
    """
    _register(SHIMMED_MODULES[0], _estimator_training())
    for name in SHIMMED_MODULES[1:]:
        extra = _EMBEDDING_PARAMETERS if name.endswith(".tpu_embedding") else ()
        _register(name, _placeholder_module(name, extra))
    _tf_export_names()
    _attach_estimator(tf)


def _tf_export_names() -> None:
    """The ``estimator`` API name in ``tf_export`` (``estimator_export`` subclasses its class)."""
    from tensorflow.python.util import tf_export

    if not hasattr(tf_export, "ESTIMATOR_API_NAME"):
        tf_export.ESTIMATOR_API_NAME = "estimator"
    attributes = type(tf_export.API_ATTRS[tf_export.TENSORFLOW_API_NAME])
    tf_export.API_ATTRS.setdefault(
        "estimator", attributes("_estimator_api_names", "_estimator_api_constants")
    )
    tf_export.API_ATTRS_V1.setdefault(
        "estimator", attributes("_estimator_api_names_v1", "_estimator_api_constants_v1")
    )


def _exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _register(name: str, module: types.ModuleType) -> None:
    if name in sys.modules or _exists(name):
        return
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    setattr(sys.modules[parent] if parent in sys.modules else _import(parent), child, module)


def _import(name: str) -> types.ModuleType:
    import importlib

    return importlib.import_module(name)


def _attach_estimator(tf: types.ModuleType) -> None:
    from tensorflow.python.util.lazy_loader import LazyLoader

    if "estimator" not in vars(tf):
        tf.estimator = LazyLoader("estimator", vars(tf), _V2_API)  # type: ignore[attr-defined]
    for api_name, target in (("v1", _V1_API), ("v2", _V2_API)):
        name = f"tensorflow._api.v2.compat.{api_name}"
        module = sys.modules.get(name)
        if module is None or "estimator" in vars(module):
            continue
        lazy = LazyLoader("estimator", vars(module), target)
        module.estimator = lazy  # type: ignore[attr-defined]
        wrapper = getattr(tf.compat, api_name, None)  # TensorFlow's TFModuleWrapper
        if wrapper is not None and wrapper is not module:
            setattr(wrapper, "estimator", lazy)  # noqa: B010 (a wrapper's __setattr__)


# --- tensorflow.python.distribute.estimator_training ----------------------------------------


def _estimator_training() -> types.ModuleType:
    module = types.ModuleType(
        SHIMMED_MODULES[0], "The local path of TF 2.15's estimator_training (estimator_fix.compat)."
    )
    vars(module).update(
        CHIEF="chief",
        EVALUATOR="evaluator",
        PS="ps",
        WORKER="worker",
        init_run_config=_init_run_config,
        should_run_distribute_coordinator=_should_run_distribute_coordinator,
    )
    for name in ("train_and_evaluate", "estimator_train", "estimator_evaluate"):
        setattr(module, name, _refusing(f"estimator_training.{name}", _COORDINATOR))
    return module


_COORDINATOR = "multi-worker Estimator training through the distribute coordinator"


def _init_run_config(config: Any, tf_config: dict[str, Any]) -> None:
    """TF 2.15's ``init_run_config`` where no coordinator is used; otherwise a refusal.

    Mirrors its checks of ``experimental_distribute`` and its local path: the coordinator is
    not used when the cluster is empty or has a master job, or no train strategy is set.
    """
    experimental = config._experimental_distribute
    for attr in ("train_distribute", "eval_distribute"):
        value = getattr(experimental, attr, None) if experimental else None
        if value:
            if getattr(config, f"_{attr}"):
                raise ValueError(f"Either `{attr}` or `experimental_distribute.{attr}` can be set.")
            setattr(config, f"_{attr}", value)
    cluster = tf_config.get("cluster", {})
    remote = getattr(experimental, "remote_cluster", None) if experimental else None
    if config._train_distribute and (remote or (cluster and "master" not in cluster)):
        raise compat.unsupported(_COORDINATOR)
    config._init_distributed_setting_from_environment_var({})
    config._distribute_coordinator_mode = None
    config._init_distributed_setting_from_environment_var(tf_config)
    config._maybe_overwrite_session_config_for_distributed_training()


def _should_run_distribute_coordinator(config: Any) -> bool:
    return getattr(config, "_distribute_coordinator_mode", None) is not None


# --- TPU placeholders ---------------------------------------------------------------------------


def _refusing(name: str, what: str) -> Any:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise compat.unsupported(what)

    refuse.__name__ = refuse.__qualname__ = name.rpartition(".")[2]
    return refuse


def _placeholder_class(name: str, what: str) -> type:
    def refuse(self: Any, *_args: Any, **_kwargs: Any) -> None:
        raise compat.unsupported(what)

    return type(name, (), {"__init__": refuse, "__doc__": f"Not available here: {what}."})


def _placeholder_module(name: str, classes: tuple[str, ...]) -> types.ModuleType:
    what = f"TPUEstimator's TPU support (`{name}`)"
    module = types.ModuleType(name, f"A placeholder: {what} is not in this TensorFlow.")
    for cls in classes:
        setattr(module, cls, _placeholder_class(cls, what))

    def module_getattr(attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        if attr[:1].isupper():
            return _placeholder_class(attr, what)
        return _refusing(f"{name}.{attr}", what)

    module.__getattr__ = module_getattr  # type: ignore[method-assign]
    return module
