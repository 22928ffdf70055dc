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

if TYPE_CHECKING:
    from estimator_fix import repair

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
TESTDATA = REPO / "testdata"


def manifest() -> dict[str, dict]:
    return json.loads((TESTDATA / "MANIFEST.json").read_text())


@pytest.fixture
def model_copy(tmp_path: Path) -> Callable[[str], Path]:
    """Copies a testdata fixture into tmp_path and returns the copy's path."""

    def copy(name: str) -> Path:
        dst = tmp_path / name
        shutil.copytree(TESTDATA / name, dst)
        return dst

    return copy


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
