"""verify and resolve_saved_model on paths that are not a loadable SavedModel.

A missing path, a directory that is not a SavedModel, a garbage saved_model.pb, an export
without its variables and a bad checkpoint path each fail with one line of the right error
type; resolve_saved_model picks the version directory under an export base.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from estimator_fix import errors
from estimator_fix.verify import resolve_saved_model, verify
from tests.verify_helpers import Exported, _one_line

# The session-scoped export fixtures live in verify_helpers; registering it as a plugin gives
# every verify module the same fixture instances (one export per fixture per session).
pytest_plugins = ["tests.verify_helpers"]


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
