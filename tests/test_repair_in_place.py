"""Tests of ``repair`` in place: every repairable fixture fixed in its own directory, read by TF.

scan -> plan -> repair through the library on copies of the frozen fixtures: the originals stay
byte for byte, the new checkpoint's data files are hard links, TensorFlow reads an int64 step and
every original tensor, and a second run is a no-op. Also the same command run twice (and with
another ``--step``), ``--drop_renamed``, a V1 checkpoint converted to V2, and an Estimator that
resumes training from the repaired checkpoint.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tensorflow as tf

from estimator_fix import errors, plan, repair, scan
from estimator_fix.checkpoint import data_file, index_file
from estimator_fix.storage import names
from estimator_fix.types import Format, StepStatus, Verdict
from tests.conftest import (
    STATE,
    TESTDATA,
    Digest,
    added_files,
    assert_int64_step,
    assert_nothing_written,
    assert_one_line_error,
    assert_originals_identical,
    assert_same_tensors,
    manifest,
    read_checkpoint,
    repair_dir,
    run_cli,
    temporaries,
    tree_digest,
    write_v1_checkpoint,
)

MANIFEST = manifest()
LOCK = names.LOCK_NAME


# --- the repairable fixtures ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Case:
    """A fixture that ``repair`` fixes in place, and what the result must look like."""

    name: str
    step: int | None = None  # passed as --step
    expected_step: int = 6
    new_name: str | None = "model.ckpt-fixed-6"  # None: the checkpoint itself is unchanged
    replaced: tuple[str, ...] = ()  # original keys the repaired checkpoint holds differently
    kept_renamed: str | None = None  # a renamed step key that must survive

    @property
    def source_name(self) -> str:
        return str(MANIFEST[self.name]["latest_checkpoint"])

    @property
    def latest_name(self) -> str:
        return self.new_name or self.source_name


REPAIRABLE = (
    Case("missing_step"),
    Case("renamed_step", kept_renamed="training/global_step"),
    Case("scoped_step", kept_renamed="global_step/global_step"),
    Case("int32_step", replaced=("global_step",)),
    Case("float_step", replaced=("global_step",)),
    Case("session_loop_int32_step", kept_renamed="my_global_step"),
    Case("foreign_state_file", new_name=None),
    Case(
        "conflicting_step",
        step=106,
        expected_step=106,
        new_name="model.ckpt-fixed-106",
        kept_renamed="global_step_1",
    ),
    Case("missing_step_no_evidence", step=6),
)


def test_cases_agree_with_manifest() -> None:
    """The expectations above are the manifest's, not invented here."""
    for case in REPAIRABLE:
        entry = MANIFEST[case.name]
        assert entry["healthy"] is False
        if entry["step"] is not None:  # null: nothing says, the test passes --step
            assert case.step is None and case.expected_step == entry["step"]
        else:
            assert case.step is not None
        if case.kept_renamed is not None:
            assert entry["step_key"] == case.kept_renamed


# --- helpers ----------------------------------------------------------------------------------


def assert_same_bytes(source: str | Path, repaired: str | Path, *, skip: tuple[str, ...]) -> None:
    """Byte for byte, with the crc32c in the index (read without TensorFlow)."""
    src = index_file.read_index(index_file.index_path(str(source)))
    dst = index_file.read_index(index_file.index_path(str(repaired)))
    for entry in src.entries:
        if entry.name in skip and not entry.is_slice:
            continue
        new = next(e for e in dst.entries if e.key == entry.key)
        assert (new.dtype, new.shape, new.crc32c) == (entry.dtype, entry.shape, entry.crc32c)
        if entry.size:
            assert data_file.read_tensor_bytes(
                str(repaired), dst, new
            ) == data_file.read_tensor_bytes(str(source), src, entry)


# --- in place, every repairable fixture ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Repaired:
    case: Case
    model_dir: Path
    before: Digest
    result: repair.RepairResult


@pytest.fixture(scope="module", params=REPAIRABLE, ids=lambda c: c.name)
def repaired(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Repaired:
    """One in-place repair per fixture (library API), shared by the checks below."""
    case: Case = request.param
    model_dir = tmp_path_factory.mktemp("inplace") / case.name
    shutil.copytree(TESTDATA / case.name, model_dir)
    before = tree_digest(model_dir)
    result = repair_dir(model_dir, step=case.step)
    return Repaired(case, model_dir, before, result)


def test_inplace_originals_byte_identical(repaired: Repaired) -> None:
    assert_originals_identical(repaired.before, repaired.model_dir, except_state=True)
    assert temporaries(repaired.model_dir) == []


def test_inplace_adds_only_the_new_checkpoint_state_backup_and_lock(repaired: Repaired) -> None:
    case, result = repaired.case, repaired.result
    expected = {LOCK, Path(result.state_backup or "").name}
    if case.new_name is not None:
        expected |= {
            f"{case.new_name}.index",
            f"{case.new_name}.data-00000-of-00002",
            f"{case.new_name}.data-00001-of-00002",
        }
    assert added_files(repaired.before, repaired.model_dir) == expected
    assert result.new_prefix == (str(repaired.model_dir / case.new_name) if case.new_name else None)


def test_inplace_state_file_replaced_and_backup_equals_old(repaired: Repaired) -> None:
    result = repaired.result
    assert result.state_backup is not None
    assert Path(result.state_backup).read_bytes() == repaired.before[STATE][1]
    text = (repaired.model_dir / STATE).read_text()
    assert f'model_checkpoint_path: "{repaired.case.latest_name}"' in text
    assert str(repaired.model_dir) not in text  # relative paths only


def test_inplace_data_files_are_hard_links(repaired: Repaired) -> None:
    case = repaired.case
    if case.new_name is None:  # only the state file was rewritten: nothing to link
        assert repaired.result.new_prefix is None
        return
    assert repaired.result.linked
    original = repaired.model_dir / f"{case.source_name}.data-00000-of-00001"
    linked = repaired.model_dir / f"{case.new_name}.data-00000-of-00002"
    assert os.path.samefile(original, linked)


def test_inplace_tf_reads_int64_step_and_every_original_key(repaired: Repaired) -> None:
    case, model_dir = repaired.case, repaired.model_dir
    source = model_dir / case.source_name
    new = model_dir / case.latest_name
    assert_int64_step(new, case.expected_step)
    assert_same_tensors(source, new, skip=case.replaced)
    assert_same_bytes(source, new, skip=case.replaced)
    keys = set(read_checkpoint(new))
    if case.kept_renamed is not None:
        assert case.kept_renamed in keys  # kept unless --drop_renamed
    assert keys - set(read_checkpoint(source)) <= {"global_step"}


def test_inplace_scan_healthy_and_latest_checkpoint_names_new_prefix(repaired: Repaired) -> None:
    model_dir, case = repaired.model_dir, repaired.case
    report = scan.scan(str(model_dir))
    assert report.verdict is Verdict.HEALTHY, [p.code for p in report.problems]
    assert report.target == str(model_dir / case.latest_name)
    target = report.target_report
    assert target is not None and target.step is not None
    assert target.step.status is StepStatus.OK and not target.step.conflict
    assert tf.train.latest_checkpoint(str(model_dir)) == str(model_dir / case.latest_name)


def test_inplace_second_repair_is_a_noop(repaired: Repaired) -> None:
    model_dir = repaired.model_dir
    before = tree_digest(model_dir)
    second = plan.plan(scan.scan(str(model_dir)))
    assert second.is_noop
    assert any("healthy" in a for a in second.actions)
    result = repair.repair(second)
    assert result.new_prefix is None and result.files_added == ()
    assert tree_digest(model_dir) == before  # not even the state file is rewritten


def test_cli_repair_then_second_run_says_healthy(model_copy: Callable[[str], Path]) -> None:
    model_dir = model_copy("missing_step")
    before = tree_digest(model_dir)
    first = run_cli("repair", f"--model_dir={model_dir}", "--json")
    assert first.returncode == 0, first.stderr
    assert "Traceback" not in first.stderr
    doc = json.loads(first.stdout)
    assert doc["schema"] == repair.REPAIR_SCHEMA
    assert doc["step"] == 6 and doc["new_prefix"] == str(model_dir / "model.ckpt-fixed-6")
    assert doc["linked"] is True
    assert_originals_identical(before, model_dir, except_state=True)
    assert_int64_step(model_dir / "model.ckpt-fixed-6", 6)

    repaired_digest = tree_digest(model_dir)
    second = run_cli("repair", f"--model_dir={model_dir}")
    assert second.returncode == 0, second.stderr
    assert "nothing to do" in second.stdout and "healthy" in second.stdout
    assert tree_digest(model_dir) == repaired_digest


# --- the same command twice ---------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["missing_step", "keras_missing_step", "int32_step"])
def test_same_step_twice_is_a_noop(model_copy: Callable[[str], Path], fixture: str) -> None:
    model_dir = model_copy(fixture)
    first = run_cli("repair", f"--model_dir={model_dir}", "--step=40")
    assert first.returncode == 0, first.stderr
    repaired_digest = tree_digest(model_dir)
    second = run_cli("repair", f"--model_dir={model_dir}", "--step=40", "--json")
    assert second.returncode == 0, second.stderr
    doc = json.loads(second.stdout)
    assert doc["schema"] == plan.PLAN_SCHEMA and doc["is_noop"] is True
    assert any("healthy" in a for a in doc["actions"])
    assert tree_digest(model_dir) == repaired_digest  # not even the lock or the state file


def test_other_step_on_a_healthy_checkpoint_refused(model_copy: Callable[[str], Path]) -> None:
    model_dir = model_copy("dnn_classifier")
    before = tree_digest(model_dir)
    line = assert_one_line_error(
        run_cli("repair", f"--model_dir={model_dir}", "--step=7"), errors.EXIT_USAGE
    )
    assert "--step=7" in line and "global_step = 6" in line
    assert_nothing_written(before, model_dir)
    with pytest.raises(errors.UsageError, match="global_step = 6"):
        plan.plan(scan.scan(str(model_dir)), step=7)


def test_same_step_still_repairs_the_rest(model_copy: Callable[[str], Path]) -> None:
    """The step already equals --step, the state file is broken: only the state file changes."""
    model_dir = model_copy("foreign_state_file")
    with_step = plan.plan(scan.scan(str(model_dir)), step=6)
    assert with_step == plan.plan(scan.scan(str(model_dir)))
    assert not with_step.is_noop and with_step.rewrite_state and not with_step.add_step
    assert with_step.new_prefix is None


# --- options ----------------------------------------------------------------------------------


@pytest.mark.parametrize("drop", [False, True], ids=["default_keeps", "drop_renamed"])
def test_drop_renamed(model_copy: Callable[[str], Path], drop: bool) -> None:
    model_dir = model_copy("renamed_step")
    result = repair_dir(model_dir, drop_renamed=drop)
    assert result.new_prefix is not None
    keys = set(read_checkpoint(result.new_prefix))
    assert ("training/global_step" in keys) is not drop
    assert_int64_step(result.new_prefix, 6)
    assert_same_tensors(
        model_dir / "model.ckpt-6",
        result.new_prefix,
        skip=("training/global_step",) if drop else (),
    )
    assert scan.scan(str(model_dir)).verdict is Verdict.HEALTHY


def test_rerepair_with_drop_renamed_writes_a_second_checkpoint(
    model_copy: Callable[[str], Path],
) -> None:
    """The existing -fixed-6 keeps the renamed key, so it is not this repair: -fixed2-6 is.

    Both repairs run within a second or so: the first backup (the original state file) must
    survive the second repair's backup.
    """
    model_dir = model_copy("renamed_step")
    original_state = (model_dir / STATE).read_bytes()
    first = repair_dir(model_dir)
    first_state = (model_dir / STATE).read_bytes()
    report = scan.scan(str(model_dir), checkpoint="model.ckpt-6")
    second = repair.repair(plan.plan(report, drop_renamed=True))
    assert not second.adopted_existing
    assert first.new_prefix == str(model_dir / "model.ckpt-fixed-6")
    assert second.new_prefix == str(model_dir / "model.ckpt-fixed2-6")
    assert "training/global_step" in read_checkpoint(first.new_prefix)
    assert "training/global_step" not in read_checkpoint(second.new_prefix)
    assert_int64_step(second.new_prefix, 6)
    assert tf.train.latest_checkpoint(str(model_dir)) == second.new_prefix
    backups = {p.read_bytes() for p in model_dir.glob(f"{STATE}.bak-*")}
    assert backups == {original_state, first_state}
    assert scan.scan(str(model_dir)).verdict is Verdict.HEALTHY


# --- V1 -------------------------------------------------------------------------------------


def test_v1_checkpoint_converted_to_v2(tmp_path: Path) -> None:
    model_dir = tmp_path / "v1_no_step"
    model_dir.mkdir()
    values = write_v1_checkpoint(model_dir, 5)
    assert (model_dir / "model.ckpt-5").is_file()  # V1: one file, no .index
    before = tree_digest(model_dir)
    report = scan.scan(str(model_dir))
    target = report.target_report
    assert target is not None and target.format is Format.V1
    assert target.step is not None and target.step.status is StepStatus.MISSING

    result = repair.repair(plan.plan(report))
    assert_originals_identical(before, model_dir, except_state=True)
    assert result.new_prefix == str(model_dir / "model.ckpt-fixed-5")
    assert Path(index_file.index_path(result.new_prefix)).is_file()  # V2 now
    assert_int64_step(result.new_prefix, 5)
    assert_same_tensors(model_dir / "model.ckpt-5", result.new_prefix, skip=())
    found = read_checkpoint(result.new_prefix)
    for key, value in values.items():
        assert np.array_equal(found[key][2], value), key
    after = scan.scan(str(model_dir))
    assert after.verdict is Verdict.HEALTHY
    assert after.target_report is not None and after.target_report.format is Format.V2
    assert tf.train.latest_checkpoint(str(model_dir)) == result.new_prefix


# --- resume training ----------------------------------------------------------------------------


def _load_models() -> ModuleType:
    name = f"testdata_models_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(name, TESTDATA / "models.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_estimator_resumes_at_step_n_plus_1(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    models = _load_models()
    broken = model_copy("missing_step")
    with pytest.raises(Exception, match="global_step"):  # the bug this tool exists for
        models.dnn_classifier(str(broken)).train(models.dnn_classifier_train_input_fn, steps=1)

    model_dir = tmp_path / "resume"
    shutil.copytree(TESTDATA / "missing_step", model_dir)
    result = repair_dir(model_dir)
    assert result.step == 6
    models.dnn_classifier(str(model_dir)).train(models.dnn_classifier_train_input_fn, steps=1)
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest == str(model_dir / "model.ckpt-7")
    assert_int64_step(latest, 7)
