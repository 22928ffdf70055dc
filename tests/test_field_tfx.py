"""Field samples: TFX's Chicago Taxi ``tf.estimator`` model directory, from ``../shared/field/``.

Nobody on this project wrote these files (see the folder's README.md). The model directory is
broken the ways users break it (step stripped, int32, renamed, a state file from another
machine), each with real TensorFlow on a copy: ``estimator-fix repair`` fixes it and the
checkpoint's own ``.meta`` graph restores every original tensor bit for bit, with the int64 step
at 1000.

The field files are never modified: tests copy them into ``tmp_path``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import (
    FIELD,
    _bits,
    assert_int64_step_at,
    latest,
    run_cli,
    save_v2,
    tensor_bits,
    write_state_file,
)

if not FIELD.is_dir():
    pytest.skip(
        f"the field samples are not here ({FIELD}: the shared/ folder beside the repository); "
        "they are test data only and not part of the repository",
        allow_module_level=True,
    )

import numpy as np
import tensorflow as tf

TFX_DIR = FIELD / "tfx" / "current" / "Format-Serving"
TFX_STEP = 1000


def copy_writable(src: Path, dst: Path) -> Path:
    """A copy of ``src`` (read-only field files) that the test may change and repair may write."""
    shutil.copytree(src, dst, copy_function=shutil.copyfile)
    for root, dirs, _ in os.walk(dst):
        for d in dirs:
            Path(root, d).chmod(stat.S_IRWXU)
    dst.chmod(stat.S_IRWXU)
    return dst


# --- the TFX estimator model directory, broken as users break it ------------------------------


@pytest.fixture(scope="session")
def tfx_values() -> dict[str, np.ndarray]:
    """Every tensor of the TFX model directory's latest checkpoint, as TensorFlow reads it."""
    assert latest(TFX_DIR) == str(TFX_DIR / f"model.ckpt-{TFX_STEP}")
    reader = tf.compat.v1.train.NewCheckpointReader(str(TFX_DIR / f"model.ckpt-{TFX_STEP}"))
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_dtype_map()}
    assert values["global_step"].dtype == np.int64 and int(values["global_step"]) == TFX_STEP
    assert int(values["training/Ftrl/iter"]) == TFX_STEP
    return values


@pytest.fixture(scope="session")
def tfx_restore() -> Iterator[Callable[[str], dict[str, object]]]:
    """Restores a checkpoint into the graph of the model's own ``model.ckpt-1000.meta``.

    The exported graph's Saver restores every variable with its declared dtype (an int64
    ``global_step``), as the Estimator's does. Returns the bits of every variable after restore.
    Imported once per session.
    """
    graph = tf.Graph()
    with graph.as_default():
        saver = tf.compat.v1.train.import_meta_graph(
            str(TFX_DIR / f"model.ckpt-{TFX_STEP}.meta"), clear_devices=True
        )
        variables = tf.compat.v1.global_variables()

    def restore(prefix: str) -> dict[str, object]:
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            values = sess.run(variables)
        return {v.op.name: _bits(value) for v, value in zip(variables, values, strict=True)}

    yield restore


def _strip_step(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in values.items() if k != "global_step"}


def _retype_step(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {**values, "global_step": values["global_step"].astype(np.int32)}


def _rename_step(new_key: str, dtype: type) -> Callable[[dict], dict]:
    def rename(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**_strip_step(values), new_key: values["global_step"].astype(dtype)}

    return rename


# id -> (how the latest checkpoint's tensors are rewritten, or None: left alone; the problem the
# scan must find)
TFX_BREAKS: dict[str, tuple[Callable[[dict], dict] | None, str]] = {
    # Evidence left: training/Ftrl/iter = 1000 and the -1000 suffix.
    "step-stripped": (_strip_step, "step_missing"),
    "step-int32": (_retype_step, "step_wrong_dtype"),
    # A plain Session loop's custom step is an int32 Variable named my_global_step.
    "step-renamed-my_global_step-int32": (
        _rename_step("my_global_step", np.int32),
        "step_renamed",
    ),
    "step-scoped-global_step/global_step": (
        _rename_step("global_step/global_step", np.int64),
        "step_renamed",
    ),
    "state-file-from-another-machine": (None, "state_foreign_path"),
}


def break_tfx(case: str, values: dict[str, np.ndarray], dst: Path) -> Path:
    """A copy of the TFX model directory broken as ``case`` says, with real TensorFlow."""
    model_dir = copy_writable(TFX_DIR, dst)
    rewrite, _ = TFX_BREAKS[case]
    if rewrite is not None:
        save_v2(model_dir / f"model.ckpt-{TFX_STEP}", rewrite(values))
    else:
        names = [f"/home/alice/taxi/serving_model_dir/model.ckpt-{s}" for s in (0, 999, TFX_STEP)]
        write_state_file(model_dir, names[-1], names)
    return model_dir


@dataclasses.dataclass(frozen=True)
class BrokenTfx:
    """One broken copy after ``estimator-fix repair``.

    Attributes:
      model_dir: the copy.
      broken_restore: how TensorFlow failed on the copy before the repair: the restore's error
        class, or "no checkpoint" where ``latest_checkpoint`` found none.
      result: the repair's line in the results journal.
    """

    model_dir: Path
    broken_restore: str | None
    result: dict


@pytest.fixture(scope="session")
def tfx_repaired(
    tmp_path_factory: pytest.TempPathFactory,
    tfx_values: dict[str, np.ndarray],
    tfx_restore: Callable[[str], dict[str, object]],
) -> dict[str, BrokenTfx]:
    """Every ``TFX_BREAKS`` case on its own copy, all repaired by one ``estimator-fix repair``.

    One process for all of them (``--model_dirs=@list``): each directory is repaired exactly as
    with ``--model_dir``, and TensorFlow is imported once instead of once per case.
    """
    base = tmp_path_factory.mktemp("tfx")
    copies = {
        case: break_tfx(case, tfx_values, base / case.replace("/", "_")) for case in TFX_BREAKS
    }
    broken: dict[str, str | None] = {}
    for case, model_dir in copies.items():
        prefix = tf.train.latest_checkpoint(str(model_dir))
        broken[case] = "no checkpoint" if prefix is None else None
        if prefix is not None:
            try:
                tfx_restore(prefix)
            except (tf.errors.OpError, ValueError) as e:
                broken[case] = type(e).__name__
    listing = base / "model_dirs.txt"
    listing.write_text("".join(f"{d}\n" for d in copies.values()))
    results = base / "results.jsonl"
    run = run_cli("repair", f"--model_dirs=@{listing}", f"--results={results}", "--workers=1")
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in results.read_text().splitlines()]
    by_dir = {Path(line["model_dir"]).resolve(): line for line in lines}
    return {case: BrokenTfx(d, broken[case], by_dir[d.resolve()]) for case, d in copies.items()}


@pytest.mark.parametrize("case", list(TFX_BREAKS))
def test_broken_tfx_model_dir_is_repaired_and_restores_bit_exactly(
    case: str,
    tfx_repaired: dict[str, BrokenTfx],
    tfx_values: dict[str, np.ndarray],
    tfx_restore: Callable[[str], dict[str, object]],
) -> None:
    broken = tfx_repaired[case]
    # The break is real: TensorFlow could not restore the model as it was.
    assert broken.broken_restore is not None
    result = broken.result
    assert (result["status"], result["exit_code"], result["repaired"]) == ("done", 0, True), result
    rewrite, problem = TFX_BREAKS[case]
    assert problem in result["problems"]
    # The step is reported where a checkpoint was written; a state-file repair writes none.
    assert result["step"] == (TFX_STEP if rewrite else None)

    repaired = latest(broken.model_dir)
    if rewrite is None:
        assert repaired == str(broken.model_dir / f"model.ckpt-{TFX_STEP}")
    original = {k: _bits(v) for k, v in tfx_values.items()}
    assert tfx_restore(repaired) == original
    # Every original key, read directly, too (the restore reads only the graph's variables).
    read = tensor_bits(repaired)
    for key, value in tfx_values.items():
        assert read[key] == (value.dtype.name, value.shape, original[key]), key
    assert_int64_step_at(repaired, "global_step", TFX_STEP)
