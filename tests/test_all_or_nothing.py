"""fix is all or nothing: a failure after the repair leaves the directory as fix found it, and a
corrupt tensor is found before the first write."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from estimator_fix import errors
from estimator_fix.checkpoint import index_file
from tests.conftest import TESTDATA, run_cli, strip_step, tree_digest
from tests.test_fix import NOISY_MODEL  # the model whose SavedModel fails parity

MODELS = str(TESTDATA / "models.py")


def _one_line(stderr: str) -> str:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["in_place", "output_dir"])
def test_failed_verification_rolls_the_repair_back(
    where: str, model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    d = model_copy("custom_model_fn")
    strip_step(d, "model.ckpt-6")  # repairable: the repair commits before the export
    before = tree_digest(d)
    user = tmp_path / "noisy.py"
    user.write_text(textwrap.dedent(NOISY_MODEL))
    out = tmp_path / "repaired"
    extra = [f"--output_dir={out}"] if where == "output_dir" else []
    result = run_cli(
        "fix",
        f"--model_dir={d}",
        f"--export_dir={tmp_path / 'export'}",
        f"--model_fn={user}:model_fn",
        f"--serving_input_fn={MODELS}:custom_estimator_serving_input_fn",
        *extra,
    )
    assert result.returncode == errors.EXIT_EXPORT_FAILED, result.stderr
    line = _one_line(result.stderr)
    assert "does not predict what" in line and "the repair was rolled back" in line
    # Exactly as found: the state file, no repaired checkpoint, no backup (the lock file of an
    # in-place repair stays; it is not the user's).
    after = tree_digest(d)
    after.pop(".estimator-fix.lock", None)
    assert after == before
    assert not out.exists()
    # The SavedModel that failed is kept for inspection, out of Serving's sight.
    assert [p.name.startswith("rejected-") for p in (tmp_path / "export").iterdir()] == [True]


def _flip_a_kernel_byte(model_dir: Path, prefix: str) -> str:
    index = index_file.read_index(index_file.index_path(str(model_dir / prefix)))
    entry = max((e for e in index.variables() if e.size), key=lambda e: e.size)
    path = Path(
        index_file.data_path(str(model_dir / prefix), entry.shard_id, index.header.num_shards)
    )
    data = bytearray(path.read_bytes())
    data[entry.offset + entry.size // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return str(path)


def test_corrupt_tensor_is_found_before_the_first_write(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    d = model_copy("missing_step")
    shard = _flip_a_kernel_byte(d, "model.ckpt-6")
    before = tree_digest(d)

    # The quick scan checks shards by size only: repairable.
    assert run_cli("scan", f"--model_dir={d}").returncode == errors.EXIT_REPAIRABLE
    for args in (
        ("scan", f"--model_dir={d}", "--deep"),
        ("repair", f"--model_dir={d}", "--deep"),
        (
            "fix",
            f"--model_dir={d}",
            f"--export_dir={tmp_path / 'export'}",
            f"--estimator={MODELS}:dnn_classifier",
            f"--serving_input_fn={MODELS}:dnn_classifier_serving_input_fn",
        ),
    ):
        result = run_cli(*args)
        assert result.returncode == errors.EXIT_BAD_INPUT, (args, result.stderr)
        line = _one_line(result.stderr)
        assert line.startswith(f"estimator-fix: error: {shard}: ") and "checksum" in line
        assert "restore" in line  # what to do
        assert tree_digest(d) == before, args
    assert not (tmp_path / "export").exists()
