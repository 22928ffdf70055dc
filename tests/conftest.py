"""Shared fixtures and helpers: frozen model directories from testdata/ (always copied, never
modified), the CLI as a separate process, and checkpoints read back by TensorFlow.

The helpers that need TensorFlow or the library import them when called: every test file loads
this one, and one that touches neither should not pay for them or fail with them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from estimator_fix import compat
from tests import gcs
from tests.gcs import gcs_env, gcs_server  # noqa: F401  (fixtures: a real gs:// for the tests)

if TYPE_CHECKING:
    from estimator_fix import repair

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
compat.prepare()  # TensorFlow >= 2.16: tf.estimator, Keras 2; imports no TensorFlow
gcs.configure_process()  # TensorFlow reads its GCS_* settings at import: before any test module

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "testdata"


def manifest() -> dict[str, dict]:
    return json.loads((TESTDATA / "MANIFEST.json").read_text())


@pytest.fixture
def model_copy(tmp_path: Path) -> Callable[[str], Path]:
    """Copies a testdata fixture into tmp_path and returns the copy's path."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        copy_fixture(name, dst)
        return dst

    return copy


# Not in testdata/: made from a frozen fixture by rewriting one index entry.
UNREPAIRABLE = "vector_step"


def copy_fixture(name: str, dst: Path) -> None:
    """Copies testdata fixture ``name`` to ``dst``; ``UNREPAIRABLE`` is made on the fly.

    ``vector_step``: ``dnn_classifier`` whose ``global_step`` entry says int32 of shape [2]
    over the same 8 bytes (TensorFlow reads it; nothing says which element is the step).
    """
    if name != UNREPAIRABLE:
        shutil.copytree(TESTDATA / name, dst)
        return
    from estimator_fix.checkpoint import index_file, protos

    shutil.copytree(TESTDATA / "dnn_classifier", dst)
    path = index_file.index_path(str(dst / "model.ckpt-6"))
    index = index_file.read_index(path)
    items = [(b"", index.header.raw_value)]
    for e in index.entries:
        if e.name == "global_step":
            value = protos.encode_entry(
                dtype=protos.DT_INT32,
                shape=(2,),
                shard_id=e.shard_id,
                offset=e.offset,
                size=e.size,
                crc32c=e.crc32c,
            )
            items.append((e.key, value))
        else:
            items.append((e.key, e.raw_value))
    Path(path).write_bytes(index_file.encode_index(items))


# --- the CLI ------------------------------------------------------------------------------------


def cli_command(*args: str) -> list[str]:
    """The command line that runs the real CLI with this interpreter."""
    return [sys.executable, "-m", "estimator_fix", *args]


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment with TensorFlow's logging quiet, plus ``extra``."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def run_cli(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Runs the real CLI as a separate process (``preexec_fn`` runs in the child first)."""
    return subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        env=cli_env(**(env or {})),
        cwd=cwd or REPO,
        timeout=300,
        preexec_fn=preexec_fn,
    )


# --- files --------------------------------------------------------------------------------------


def tree_digest(path: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``path`` with its size and content: for byte-identity checks."""
    out = {}
    for p in sorted(path.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(path))] = (p.stat().st_size, p.read_bytes())
    return out


def glob_escape(path: str) -> str:
    """``path`` as a ``tf.io.gfile.glob`` pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def tree_entries(root: str | Path) -> dict[str, bool]:
    """Every path under ``root`` (relative name -> is a directory), by gfile's exact glob.

    Works on local paths and on schemes alike (``ram://`` answers ``listdir`` by prefix; a glob
    of the escaped directory is exact), independently of ``estimator_fix.storage.fs``.
    """
    import tensorflow as tf

    root = str(root)
    out: dict[str, bool] = {}
    for child in tf.io.gfile.glob(glob_escape(root) + "/*"):
        rel = child[len(root) + 1 :]
        out[rel] = bool(tf.io.gfile.stat(child).is_directory)
        if out[rel]:
            out.update({f"{rel}/{k}": v for k, v in tree_entries(child).items()})
    return out


def temporaries(root: str | Path) -> list[str]:
    """The marked temporaries under ``root``, relative to it."""
    from estimator_fix.storage import names

    return sorted(rel for rel in tree_entries(root) if names.is_temporary(rel))


# --- checkpoints --------------------------------------------------------------------------------


def read_checkpoint(prefix: str | Path) -> dict[str, tuple[Any, tuple[int, ...], np.ndarray]]:
    """Every key as TensorFlow reads it: dtype, shape, value.

    ``NewCheckpointReader``, not ``tf.train.load_checkpoint``, which fails on ``ram://``.
    """
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(str(prefix))
    dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
    return {k: (dtypes[k], tuple(shapes[k]), reader.get_tensor(k)) for k in dtypes}


def assert_same_tensors(
    source: str | Path, repaired: str | Path, *, skip: tuple[str, ...] = ()
) -> None:
    """Every key of ``source`` but ``skip`` is in ``repaired`` with its dtype, shape and value."""
    old, new = read_checkpoint(source), read_checkpoint(repaired)
    for key, (dtype, shape, value) in old.items():
        if key in skip:
            continue
        assert key in new, f"{key} missing from the repaired checkpoint"
        assert new[key][0] == dtype, key
        assert new[key][1] == shape, key
        assert np.array_equal(new[key][2], value), key


def assert_int64_step(prefix: str | Path, expected: int) -> None:
    import tensorflow as tf

    dtype, shape, value = read_checkpoint(prefix)["global_step"]
    assert (dtype, shape, int(value)) == (tf.int64, (), expected)


def write_v1_checkpoint(model_dir: Path, step: int) -> dict[str, np.ndarray]:
    """A V1-format checkpoint without global_step, as an old TF 1.x Saver wrote it. Its values."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    values: dict[str, np.ndarray] = {
        "dense/kernel": rng.standard_normal((3, 4)).astype(np.float32),
        "dense/bias": rng.standard_normal(4).astype(np.float64),
        "vocab_ids": rng.integers(-100, 100, 5).astype(np.int32),
        "names": np.array([b"alpha", b"", b"x" * 300]),
    }
    graph = tf.Graph()
    with graph.as_default():
        variables = {k: tf.compat.v1.Variable(v, name=k) for k, v in values.items()}
        saver = tf.compat.v1.train.Saver(
            var_list=variables, write_version=tf.compat.v1.train.SaverDef.V1
        )
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            saver.save(sess, str(model_dir / f"model.ckpt-{step}"), write_meta_graph=False)
    return values


def repair_dir(model_dir: str | Path, **job_options: Any) -> repair.RepairResult:
    """scan -> plan -> repair through the library, in this process (options as ``Job``'s)."""
    from estimator_fix import repair, scan
    from estimator_fix.options import Job

    job = Job("repair", str(model_dir), **job_options)
    return repair.repair(repair.prepare(scan.scan(str(model_dir)), job))


def strip_step(model_dir: Path, prefix: str, *, new_key: str | None = None) -> None:
    """Breaks a healthy checkpoint the way stripping scripts do: global_step removed (or renamed).

    The index is rewritten entry for entry (same shard, offset, size, crc32c), which TensorFlow
    reads with checksums verified; the data files are not touched.
    """
    from estimator_fix.checkpoint import index_file

    path = index_file.index_path(str(model_dir / prefix))
    index = index_file.read_index(path)
    items = [(b"", index.header.raw_value)]
    for e in index.entries:
        if e.name == "global_step":
            if new_key is None:
                continue
            items.append((new_key.encode(), e.raw_value))
        else:
            items.append((e.key, e.raw_value))
    Path(path).write_bytes(index_file.encode_index(items))


# --- repair results -----------------------------------------------------------------------------
Digest = dict[str, tuple[int, bytes]]
STATE = "checkpoint"


def added_files(before: Digest, model_dir: Path) -> set[str]:
    return set(tree_digest(model_dir)) - set(before)


def assert_originals_identical(before: Digest, model_dir: Path, *, except_state: bool) -> None:
    """Every file that was there is there with the same bytes (the state file may be new)."""
    after = tree_digest(model_dir)
    for name, content in before.items():
        if except_state and name == STATE:
            continue
        assert name in after, f"{name} disappeared"
        assert after[name] == content, f"{name} changed"


def assert_nothing_written(before: Digest, model_dir: Path) -> None:
    assert tree_digest(model_dir) == before
    assert temporaries(model_dir) == []


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The documented exit code and exactly one line on stderr, no traceback. Returns it."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("estimator-fix: ")
    return lines[0]


# --- fleets of model directories ----------------------------------------------------------------
MODELS = str(TESTDATA / "models.py")
DNN = {
    "estimator": f"{MODELS}:dnn_classifier",
    "serving_input_fn": f"{MODELS}:dnn_classifier_serving_input_fn",
}

# fixture -> (scan: status, exit code, verdict), (repair: status, exit code, error type)
MIX: dict[str, tuple[tuple[str, int, str | None], tuple[str, int, str | None]]] = {
    "dnn_classifier": (("done", 0, "healthy"), ("done", 0, None)),
    "missing_step": (("done", 3, "repairable"), ("done", 0, None)),
    "renamed_step": (("done", 3, "repairable"), ("done", 0, None)),
    "conflicting_step": (("done", 3, "repairable"), ("failed", 5, "StepEvidenceError")),
    "missing_shard": (("failed", 1, None), ("failed", 1, "MissingShardError")),
    UNREPAIRABLE: (("done", 4, "unrepairable"), ("failed", 4, "NotRepairableError")),
    "empty": (("failed", 1, None), ("failed", 1, "NotAModelDirError")),
    "a_file": (("failed", 1, None), ("failed", 1, "NotAModelDirError")),
}


def _mix(root: Path, names: tuple[str, ...] = tuple(MIX)) -> Path:
    """Copies of the fixtures under ``root``, plus an empty directory and a file."""
    root.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == "empty":
            (root / name).mkdir()
        elif name == "a_file":
            (root / name).write_text("not a model directory\n")
        else:
            copy_fixture(name, root / name)
    return root


# --- checkpoints saved by a graph-mode Saver ----------------------------------------------------
import dataclasses  # noqa: E402

if TYPE_CHECKING:
    from estimator_fix.checkpoint import index_file


@dataclasses.dataclass(frozen=True)
class VarSpec:
    """One variable to save: its name, dtype name, shape, partition count (0: none), device."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    partitions: int = 0
    device: int = 0


def _random_value(spec: VarSpec, rng: np.random.Generator) -> np.ndarray:
    shape = spec.shape
    if spec.dtype in ("float16", "float32", "float64"):
        return rng.standard_normal(shape).astype(spec.dtype)
    if spec.dtype in ("int32", "int64"):
        return rng.integers(-(2**31), 2**31, shape).astype(spec.dtype)
    if spec.dtype == "uint8":
        return rng.integers(0, 256, shape).astype(np.uint8)
    if spec.dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    assert spec.dtype == "string"
    # Lengths past 127 need two-byte varints in the stored length prefix.
    n = int(np.prod(shape, dtype=np.int64))
    items = [rng.bytes(int(rng.choice([0, 1, 5, 130, 300]))) for _ in range(n)]
    return np.array([*items, b""], dtype=object)[:n].reshape(shape)


def save_checkpoint(directory: Path, specs: list[VarSpec], *, sharded: bool, seed: int) -> str:
    """Saves ``specs`` with a graph-mode ``tf.compat.v1.train.Saver``; returns the prefix."""
    import tensorflow as tf

    rng = np.random.default_rng(seed)
    graph = tf.Graph()
    with graph.as_default():
        for spec in specs:
            dtype = tf.as_dtype(spec.dtype)
            with tf.device(f"/cpu:{spec.device}"):
                if spec.partitions:
                    init = (
                        tf.compat.v1.random_uniform_initializer(-1.0, 1.0, seed=seed)
                        if dtype.is_floating
                        else tf.compat.v1.constant_initializer(7)
                    )
                    tf.compat.v1.get_variable(
                        spec.name,
                        shape=spec.shape,
                        dtype=dtype,
                        initializer=init,
                        partitioner=tf.compat.v1.fixed_size_partitioner(spec.partitions),
                    )
                else:
                    value = tf.constant(_random_value(spec, rng), dtype=dtype)
                    tf.compat.v1.get_variable(spec.name, initializer=value)
        saver = tf.compat.v1.train.Saver(sharded=sharded)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            return str(saver.save(sess, str(directory / "model.ckpt"), global_step=5))


def items_of(index: index_file.Index) -> list[tuple[bytes, bytes]]:
    return [(b"", index.header.raw_value)] + [(e.key, e.raw_value) for e in index.entries]


# --- field samples: test data beside the repository (its shared/ folder), not part of it --------
FIELD = REPO.parent / "shared" / "field"


def tensor_bits(name: str | Path) -> dict[str, tuple[str, tuple[int, ...], object]]:
    """Every key as TensorFlow reads it: dtype name, shape and the value's exact bits.

    Numbers compare by their bytes (so -0.0 and NaN payloads count); strings by their values.
    """
    import tensorflow as tf

    reader = tf.compat.v1.train.NewCheckpointReader(str(name))
    shapes = reader.get_variable_to_shape_map()
    out: dict[str, tuple[str, tuple[int, ...], object]] = {}
    for key, dtype in reader.get_variable_to_dtype_map().items():
        out[key] = (dtype.name, tuple(shapes[key]), _bits(reader.get_tensor(key)))
    return out


def _bits(value: np.ndarray | object) -> object:
    array = np.asarray(value)
    return array.tolist() if array.dtype == object else array.tobytes()


def assert_int64_step_at(name: str | Path, key: str, expected: int) -> None:
    dtype, shape, bits = tensor_bits(name)[key]
    assert (dtype, shape) == ("int64", ()), (key, dtype, shape)
    assert bits == np.int64(expected).tobytes(), (key, bits)


def write_state_file(model_dir: Path, latest: str, all_paths: list[str]) -> None:
    lines = [f'model_checkpoint_path: "{latest}"']
    lines += [f'all_model_checkpoint_paths: "{p}"' for p in all_paths]
    (model_dir / "checkpoint").write_text("\n".join(lines) + "\n")


def save_v2(prefix: Path, values: dict[str, np.ndarray]) -> None:
    """Writes ``values`` as a checkpoint at ``prefix`` with TensorFlow's SaveV2, replacing it."""
    import tensorflow as tf

    for old in prefix.parent.glob(prefix.name + ".*"):
        if old.suffix != ".meta":
            old.unlink()
    names = sorted(values)
    with tf.Graph().as_default(), tf.compat.v1.Session() as sess:
        sess.run(
            tf.raw_ops.SaveV2(
                prefix=str(prefix),
                tensor_names=names,
                shape_and_slices=[""] * len(names),
                tensors=[tf.constant(values[n]) for n in names],
            )
        )


def latest(model_dir: Path) -> str:
    import tensorflow as tf

    found = tf.train.latest_checkpoint(str(model_dir))
    assert found is not None, f"TensorFlow finds no checkpoint in {model_dir}"
    return found
