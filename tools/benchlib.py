"""What the benchmark scripts in tools/ share: paths, the measured child process, the trees.

The scripts are run as ``python tools/bench_<x>.py``, which puts tools/ on ``sys.path``, so they
import this file as the sibling module ``benchlib`` (tools/ is no package). It defines no flags.
Their child processes are the scripts in tools/bench_children/, run as
``python tools/bench_children/<name>.py args`` (``child_script``) with ``child_env()``.

Measuring (bench_repair.py, bench_export.py, bench_fleet.py):
  ``measure(cmd, cwd=..., log_stem=...)`` runs ``cmd`` as a whole process through
  tools/bench_children/launch.py and returns a ``Measured``: exit code, wall seconds, peak RSS,
  CPU seconds and the wall-clock (epoch) times at spawn and when reaped. ``<log_stem>.out`` and
  ``.err`` get the child's output, ``<log_stem>.rusage`` the launcher's figures.

Model directories (bench_scan.py, bench_fleet.py):
  ``generate(root, num_dirs=..., tensors=..., others=...)`` writes the trees of both: a third
  healthy, a third without a step, a third cycling over ``others``. ``Writer`` writes one small
  V2 checkpoint of Estimator-like tensors and a state file per ``Case``; ``EXPECTED`` is the
  verdict and problem code ``estimator_fix.scan`` must give each.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHILDREN = os.path.join(REPO_ROOT, "tools", "bench_children")
CHILD_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2"}  # what the estimator-fix CLI sets; same for all


class BenchError(RuntimeError):
    """The benchmark's result cannot be trusted: a run failed, a result did not verify, or the
    subject or the machine is not what the benchmark needs."""


def child_script(name: str) -> str:
    """The path of ``tools/bench_children/<name>.py``. Does not perform I/O."""
    return os.path.join(CHILDREN, f"{name}.py")


def child_env() -> dict[str, str]:
    """This process's environment with ``CHILD_ENV`` over it: every child's environment."""
    return {**os.environ, **CHILD_ENV}


def link_copy(src: str, dst: str) -> None:
    """A hard-linked copy of the tree ``src`` (``cp -al``): new directories, the same inodes."""
    subprocess.run(["cp", "-al", src, dst], check=True)


# --- measuring ----------------------------------------------------------------------------------

# The launcher (tools/bench_children/launch.py) sits between the benchmark and each measured
# child, so that this process's RSS does not leak into the child's peak; see its docstring.
LAUNCHER = child_script("launch")


@dataclasses.dataclass(frozen=True)
class Measured:
    """What the launcher measured for one child process."""

    exit_code: int
    wall: float  # seconds, spawn to reaped
    peak_rss_bytes: int  # the largest process of the child's tree
    cpu: float  # user + system seconds of the child and the children it waited for
    started: float  # epoch seconds (time.time()) just before the spawn
    ended: float  # epoch seconds just after the child was reaped


def tail(path: str, lines: int = 15) -> str:
    """The last ``lines`` lines of the text file ``path``."""
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def measure(
    cmd: Sequence[str], *, cwd: str, log_stem: str, env: Mapping[str, str] | None = None
) -> Measured:
    """Runs ``cmd`` in ``cwd`` through the launcher and reaps it.

    ``env`` is the child's environment (None: this process's). The wall time is taken in the
    launcher, around spawn and wait.

    Raises:
      BenchError: the launcher itself failed.
    """
    result = log_stem + ".rusage"
    with open(log_stem + ".out", "wb") as out, open(log_stem + ".err", "wb") as err:
        launcher = subprocess.run(
            [sys.executable, LAUNCHER, result, *cmd],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=err,
            check=False,
        )
    if launcher.returncode != 0:
        raise BenchError(f"the launcher failed ({launcher.returncode}):\n{tail(log_stem + '.err')}")
    with open(result) as f:
        code, wall, maxrss_kib, cpu, started, ended = f.read().split()
    return Measured(
        exit_code=int(code),
        wall=float(wall),
        peak_rss_bytes=int(maxrss_kib) * 1024,
        cpu=float(cpu),
        started=float(started),
        ended=float(ended),
    )


# --- model directories --------------------------------------------------------------------------

FOREIGN_DIR = "/home/alice/models/run7"  # what a foreign state file names
FIRST_STEP = 1000  # the step of a tree's first directory
RENAMED_KEY = "my_global_step"
_BIG_CHUNK_MIB = 256  # big checkpoints hold tensors of at most this size


class Case(enum.StrEnum):
    HEALTHY = "healthy"
    NO_STEP = "no_step"
    INT32_STEP = "int32_step"
    RENAMED_STEP = "renamed_step"
    FOREIGN = "foreign"


# The verdict each case must get, and the problem code that must be among its problems.
EXPECTED: dict[Case, tuple[str, str | None]] = {
    Case.HEALTHY: ("healthy", None),
    Case.NO_STEP: ("repairable", "step_missing"),
    Case.INT32_STEP: ("repairable", "step_wrong_dtype"),
    Case.RENAMED_STEP: ("repairable", "step_renamed"),
    Case.FOREIGN: ("repairable", "state_foreign_path"),
}

_TEMPLATES = (
    ("dnn/hiddenlayer_{k}/kernel", "float32", (8, 8)),
    ("dnn/hiddenlayer_{k}/bias", "float32", (8,)),
    ("dnn/hiddenlayer_{k}/kernel/t_0/Adagrad", "float32", (8, 8)),
    ("dnn/hiddenlayer_{k}/bias/t_0/Adagrad", "float32", (8,)),
    ("linear/linear_model/feature_{k}/weights", "float32", (4, 1)),
    ("linear/linear_model/feature_{k}/bucket_ids", "int64", (4,)),
    ("dnn/hiddenlayer_{k}/zero_fraction_counts", "int64", (2,)),
)


def tensor_specs(count: int) -> list[tuple[str, str, tuple[int, ...]]]:
    """``count`` Estimator-like (name, dtype, shape); none looks like a step. Pure."""
    out: list[tuple[str, str, tuple[int, ...]]] = []
    for i in range(count):
        name, dtype, shape = _TEMPLATES[i % len(_TEMPLATES)]
        out.append((name.format(k=i // len(_TEMPLATES)), dtype, shape))
    return out


def offsets(step: int) -> tuple[int, float]:
    """What a checkpoint's int64 and float32 values are shifted by, so that no two directories
    of a tree hold the same bytes. Pure."""
    return step % 997, step * 1e-6


def _state_text(prefix: str) -> str:
    return f'model_checkpoint_path: "{prefix}"\nall_model_checkpoint_paths: "{prefix}"\n'


class Writer:
    """Writes model directories with ``tf.raw_ops.SaveV2`` in this (eager) process.

    Every checkpoint holds the same ``tensors - 1`` tensors (seeded random values) plus its step
    key, each value shifted by ``offsets(step)``: (added to int64 tensors, added to float32 ones).
    """

    def __init__(self, tensors: int) -> None:
        import numpy as np

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf

        self._np = np
        self._tf = tf
        specs = tensor_specs(tensors - 1)
        rng = np.random.default_rng(0)
        self._names = [name for name, _, _ in specs]
        self._base: list[Any] = [
            rng.standard_normal(shape).astype(np.float32)
            if dtype == "float32"
            else rng.integers(0, 1000, shape, dtype=np.int64)
            for _, dtype, shape in specs
        ]

    def write(self, path: str, case: Case, step: int, *, big_mib: int = 0) -> int:
        """Writes ``model.ckpt-<step>`` and a state file into ``path``; returns the key count.

        ``big_mib``: also that many MiB of zeros, in tensors ``embedding/big_<k>``.
        """
        np = self._np
        os.makedirs(path)
        prefix = os.path.join(path, f"model.ckpt-{step}")
        keys = list(self._names)
        int_offset, float_offset = offsets(step)
        values: list[Any] = [
            b + (int_offset if b.dtype == np.int64 else float_offset) for b in self._base
        ]
        left, k = big_mib, 0
        while left > 0:
            chunk = min(left, _BIG_CHUNK_MIB)
            keys.append(f"embedding/big_{k}")
            values.append(np.zeros((chunk * 256, 1024), dtype=np.float32))
            left, k = left - chunk, k + 1
        if case is Case.RENAMED_STEP:
            keys.append(RENAMED_KEY)
            values.append(np.int64(step))
        elif case is not Case.NO_STEP:
            keys.append("global_step")
            values.append(np.int32(step) if case is Case.INT32_STEP else np.int64(step))
        self._tf.raw_ops.SaveV2(
            prefix=prefix, tensor_names=keys, shape_and_slices=[""] * len(keys), tensors=values
        )
        named = os.path.basename(prefix)
        if case is Case.FOREIGN:
            named = os.path.join(FOREIGN_DIR, named)
        with open(os.path.join(path, "checkpoint"), "w") as f:
            f.write(_state_text(named))
        return len(keys)


@dataclasses.dataclass(frozen=True)
class ModelDir:
    """One generated model directory."""

    name: str  # the basename: d0001-no_step
    path: str
    prefix: str  # its one checkpoint, model.ckpt-<step>
    case: Case
    step: int
    tensor_count: int  # keys in the checkpoint, the step key included where there is one


def case_for(i: int, others: Sequence[Case]) -> Case:
    """A third healthy, a third without a step, a third cycling over ``others``. Pure."""
    if i % 3 == 0:
        return Case.HEALTHY
    if i % 3 == 1:
        return Case.NO_STEP
    return others[(i // 3) % len(others)]


def generate(root: str, *, num_dirs: int, tensors: int, others: Sequence[Case]) -> list[ModelDir]:
    """Writes ``d<i>-<case>`` for i < ``num_dirs`` under ``root``, in this one (eager) process.

    Directory i holds ``model.ckpt-<FIRST_STEP + i>`` of ``tensors`` tensors (one fewer where
    its case has no step key) and a state file; its case is ``case_for(i, others)``.
    """
    writer = Writer(tensors)
    os.makedirs(root, exist_ok=True)
    dirs = []
    for i in range(num_dirs):
        case = case_for(i, others)
        step = FIRST_STEP + i
        name = f"d{i:04d}-{case.value}"
        path = os.path.join(root, name)
        count = writer.write(path, case, step)
        prefix = os.path.join(path, f"model.ckpt-{step}")
        dirs.append(ModelDir(name, path, prefix, case, step, count))
    return dirs


def in_workdir(
    prog: str, parent: str | None, keep: bool, run: Callable[[str], tuple[str, bool]]
) -> tuple[str, bool]:
    """``run(work)`` in a fresh ``<prog>-*`` directory under ``parent`` (default: the temp dir),
    removed afterwards unless ``keep``. Returns what ``run`` returns; a ``BenchError`` is one
    line on stderr and exit 1."""
    parent = parent or tempfile.gettempdir()
    os.makedirs(parent, exist_ok=True)
    work = tempfile.mkdtemp(prefix=f"{prog}-", dir=parent)
    try:
        return run(work)
    except BenchError as e:
        sys.stderr.write(f"{prog}: error: {e}\n")
        sys.exit(1)
    finally:
        if keep:
            logging.info("kept %s", work)
        else:
            shutil.rmtree(work, ignore_errors=True)
