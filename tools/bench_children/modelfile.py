"""Loads a model code file by its path, for the children that build an Estimator themselves."""

import importlib.util
import os
import sys
from types import ModuleType


def load(path: str, name: str = "bench_models") -> ModuleType:
    """Imports the Python file ``path`` as module ``name``; its directory goes on ``sys.path``.

    Raises:
      ImportError: ``path`` is not a loadable Python file.
    """
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"{path}: not a loadable Python file")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
