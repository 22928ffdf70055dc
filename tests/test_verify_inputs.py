"""verify's inputs: load_inputs on JSON and .npz files, and inputs that do not fit.

Garbage, malformed or missing inputs files fail with one line naming the file; good JSON and
.npz files round-trip; inputs missing a feature or not matching the signature's dtype or shape
are refused against a real export.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from estimator_fix import errors
from estimator_fix.verify import load_inputs, verify
from tests.verify_helpers import Exported, _one_line

# The session-scoped export fixtures live in verify_helpers; registering it as a plugin gives
# every verify module the same fixture instances (one export per fixture per session).
pytest_plugins = ["tests.verify_helpers"]


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        pytest.param("in.json", b"{not json", "not valid JSON", id="garbage-json"),
        pytest.param("in.json", b"\xff\xfe\x00garbage", "not UTF-8", id="binary-garbage"),
        pytest.param("in.json", b"[[1, 2]]", "must be a JSON object", id="not-an-object"),
        pytest.param("in.json", b"{}", "holds no features", id="empty-object"),
        pytest.param("in.json", b'{"a": [[1, 2], [3]]}', "not a rectangular", id="ragged"),
        pytest.param("in.json", b'{"a": 1.5}', "is a scalar", id="scalar"),
        pytest.param("in.json", b'{"a": [{"b": 1}]}', "must hold numbers", id="objects"),
        pytest.param(
            "in.json", b'{"a": [1, 2], "b": [1]}', "different numbers of rows", id="row-mismatch"
        ),
        pytest.param("in.json", b'{"a": []}', "no rows", id="no-rows"),
        pytest.param(
            "in.npz", b"PK\x03\x04 truncated zip", "not a readable .npz", id="garbage-npz"
        ),
    ],
)
def test_bad_inputs_file(tmp_path: Path, name: str, content: bytes, needle: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(errors.InputError) as info:
        load_inputs(str(path))
    _one_line(info.value, needle)
    assert str(path) in str(info.value)
    assert info.value.exit_code == errors.EXIT_BAD_INPUT


def test_missing_inputs_file(tmp_path: Path) -> None:
    with pytest.raises(errors.PathNotFoundError) as info:
        load_inputs(str(tmp_path / "absent.json"))
    _one_line(info.value, "absent.json")


def test_inputs_json_and_npz_round_trip(tmp_path: Path) -> None:
    as_json = tmp_path / "in.json"
    as_json.write_text(json.dumps({"a": [0.5, -1.0], "s": ["x", "y"], "v": [[1, 2], [3, 4]]}))
    loaded = load_inputs(str(as_json))
    assert loaded["a"].tolist() == [0.5, -1.0]
    assert loaded["v"].shape == (2, 2)
    as_npz = tmp_path / "in.npz"
    np.savez(as_npz, a=np.array([1.0, 2.0], np.float32), s=np.array([b"x", b"y"]))
    loaded = load_inputs(str(as_npz))
    assert loaded["a"].dtype == np.float32 and loaded["s"].tolist() == [b"x", b"y"]


@pytest.mark.slow
def test_inputs_file_missing_a_feature(tmp_path: Path, exported: Callable[[str], Exported]) -> None:
    ex = exported("dnn_classifier")
    path = tmp_path / "inputs.json"
    path.write_text(json.dumps({"x0": [0.5, 0.1], "x1": [0.2, 0.3]}))
    with pytest.raises(errors.InputError) as info:
        verify(ex.export_path, inputs=load_inputs(str(path)), inputs_source=f"file:{path}")
    _one_line(info.value, "missing feature(s) x2")
    assert str(path) in str(info.value)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        pytest.param({"x": np.zeros((2, 5), np.float32)}, "expects (-1, 2)", id="wrong-shape"),
        pytest.param(
            {"x": np.array([["a", "b"]])},
            "holds strings but the SavedModel expects float32",
            id="strings-for-floats",
        ),
    ],
)
def test_inputs_that_do_not_fit_the_signature(
    inputs: dict[str, np.ndarray], needle: str, exported: Callable[[str], Exported]
) -> None:
    ex = exported("keras_object_based")
    with pytest.raises(errors.InputError) as info:
        verify(ex.export_path, inputs=inputs, inputs_source="file:/tmp/in.json")
    _one_line(info.value, needle)
    assert info.value.path == "/tmp/in.json"
