"""Tests of ``repair``: scan -> plan -> repair on copies of the frozen fixtures, read back by TF.

Most tests call the library (``scan.scan``, ``plan.plan``, ``repair.repair``) in this process;
exit codes and the one-line error promise are tested through the real CLI in a subprocess.
Faults are real, not mocked: ``RLIMIT_FSIZE`` makes writes fail with ``EFBIG`` partway, a tiny
tmpfs makes them fail with ``ENOSPC``, a read-only bind mount stops them with ``EROFS`` (the
mount tests skip where mounting is not permitted), and the lock is held with a real ``flock``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import importlib.util
import json
import os
import resource
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import tensorflow as tf

from estimator_fix import errors, plan, repair, scan
from estimator_fix.checkpoint import data_file, index_file
from estimator_fix.options import Job
from estimator_fix.storage import names
from estimator_fix.types import Format, StepStatus, Verdict
from tests.conftest import (
    TESTDATA,
    assert_int64_step,
    assert_same_tensors,
    manifest,
    read_checkpoint,
    repair_dir,
    run_cli,
    temporaries,
    tree_digest,
    write_v1_checkpoint,
)

Digest = dict[str, tuple[int, bytes]]

MANIFEST = manifest()
LOCK = names.LOCK_NAME
STATE = "checkpoint"


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


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    """The documented exit code and exactly one line on stderr, no traceback. Returns it."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("estimator-fix: ")
    return lines[0]


@contextlib.contextmanager
def mounted(what: list[str], target: Path) -> Iterator[None]:
    """``mount`` (root only); skips the test where mounting is not permitted."""
    target.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    if mount is None or os.geteuid() != 0:
        pytest.skip("mounting needs root and mount(8)")
    proc = subprocess.run([mount, *what, str(target)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"mount not permitted here: {proc.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)


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


# --- refusals: nothing written --------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "evidence"),
    [
        pytest.param("conflicting_step", ("global_step_1=106", "prefix_suffix=6"), id="conflict"),
        pytest.param("missing_step_no_evidence", ("no evidence",), id="no_evidence"),
    ],
)
def test_step_evidence_refused(
    model_copy: Callable[[str], Path], fixture: str, evidence: tuple[str, ...]
) -> None:
    model_dir = model_copy(fixture)
    before = tree_digest(model_dir)
    with pytest.raises(errors.StepEvidenceError) as info:
        plan.plan(scan.scan(str(model_dir)))
    assert info.value.exit_code == errors.EXIT_STEP_EVIDENCE
    for needle in evidence:
        assert needle in str(info.value)

    line = assert_one_line_error(
        run_cli("repair", f"--model_dir={model_dir}"), errors.EXIT_STEP_EVIDENCE
    )
    assert "--step" in line
    for needle in evidence:
        assert needle in line
    assert_nothing_written(before, model_dir)


@pytest.mark.parametrize("step", [-1, 2**63], ids=["negative", "over_int64"])
def test_bad_step_is_a_usage_error(model_copy: Callable[[str], Path], step: int) -> None:
    model_dir = model_copy("missing_step")
    before = tree_digest(model_dir)
    with pytest.raises(errors.UsageError):
        plan.plan(scan.scan(str(model_dir)), step=step)
    assert_one_line_error(
        run_cli("repair", f"--model_dir={model_dir}", f"--step={step}"), errors.EXIT_USAGE
    )
    assert_nothing_written(before, model_dir)


@pytest.mark.parametrize(
    ("fixture", "code", "needle"),
    [
        pytest.param(
            "keras_missing_step", errors.EXIT_UNREPAIRABLE, "object_based", id="keras_missing_step"
        ),
        pytest.param(
            "missing_shard",
            errors.EXIT_BAD_INPUT,
            "model.ckpt-6.data-00001-of-00002",
            id="missing_shard",
        ),
    ],
)
def test_unrepairable_and_bad_input_refused(
    model_copy: Callable[[str], Path], fixture: str, code: int, needle: str
) -> None:
    model_dir = model_copy(fixture)
    before = tree_digest(model_dir)
    line = assert_one_line_error(run_cli("repair", f"--model_dir={model_dir}"), code)
    assert needle in line
    with pytest.raises(errors.Error) as info:
        repair_dir(model_dir)
    assert info.value.exit_code == code
    assert_nothing_written(before, model_dir)


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


@pytest.mark.parametrize(
    ("fixture", "step"),
    [
        pytest.param("missing_step", 6, id="missing_step"),
        pytest.param("int32_step", 6, id="int32_step"),
        pytest.param("foreign_state_file", 6, id="foreign_state_file"),
        pytest.param("dnn_linear_partitioned", 6, id="healthy_partitioned_2_shards"),
    ],
)
def test_output_dir_leaves_source_untouched(
    model_copy: Callable[[str], Path], tmp_path: Path, fixture: str, step: int
) -> None:
    source = model_copy(fixture)
    before = tree_digest(source)
    out = tmp_path / "elsewhere" / "repaired"  # the parent does not exist yet
    result = repair_dir(source, output_dir=str(out))
    assert tree_digest(source) == before  # state file included, and no lock file
    assert not (source / LOCK).exists()
    assert temporaries(source) == [] and temporaries(out.parent) == []
    assert result.output_dir == str(out)
    report = scan.scan(str(out))
    assert report.verdict is Verdict.HEALTHY, [p.code for p in report.problems]
    latest = tf.train.latest_checkpoint(str(out))
    assert latest == str(out / "model.ckpt-6")
    assert_int64_step(latest, step)
    skip = ("global_step",) if fixture == "int32_step" else ()
    assert_same_tensors(source / "model.ckpt-6", latest, skip=skip)


@pytest.mark.parametrize(
    "where",
    ["source", "inside", "inside_nested", "nonempty"],
)
def test_output_dir_refused(model_copy: Callable[[str], Path], tmp_path: Path, where: str) -> None:
    source = model_copy("missing_step")
    nonempty = tmp_path / "taken"
    nonempty.mkdir()
    (nonempty / "something").write_text("x")
    out = {
        "source": source,
        "inside": source / "out",
        "inside_nested": source / "a" / "b",
        "nonempty": nonempty,
    }[where]
    before = tree_digest(source)
    with pytest.raises(errors.UsageError):
        repair.prepare(scan.scan(str(source)), Job("repair", str(source), output_dir=str(out)))
    line = assert_one_line_error(
        run_cli("repair", f"--model_dir={source}", f"--output_dir={out}"), errors.EXIT_USAGE
    )
    assert "--output_dir" in line
    assert_nothing_written(before, source)
    assert (nonempty / "something").read_text() == "x"


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_dry_run_prints_plan_and_writes_nothing(
    model_copy: Callable[[str], Path], as_json: bool
) -> None:
    model_dir = model_copy("missing_step")
    before = tree_digest(model_dir)
    proc = run_cli("repair", f"--model_dir={model_dir}", "--dry_run", *(["--json"] * as_json))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    if as_json:
        doc = json.loads(proc.stdout)
        assert doc["schema"] == plan.PLAN_SCHEMA
        assert doc["step"] == 6 and doc["is_noop"] is False
        assert doc["new_prefix"] == str(model_dir / "model.ckpt-fixed-6")
        assert doc["step_evidence"]["source"] == "prefix_suffix"
    else:
        assert "model.ckpt-fixed-6" in proc.stdout
        assert "step: 6 from prefix_suffix" in proc.stdout
    assert_nothing_written(before, model_dir)


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


# --- write failures ---------------------------------------------------------------------------


def _run_cli_with_file_size_limit(limit: int, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI with every file capped at ``limit`` bytes: writes past it fail with EFBIG."""

    def limit_writes() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death by signal
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return run_cli(*args, preexec_fn=limit_writes)


@pytest.mark.parametrize(
    ("limit", "where"),
    [
        # 30 bytes: the lock note fits, TensorFlow's write of the step's index does not.
        pytest.param(30, "step.index", id="tf_writes_step"),
        # 200 bytes: the step checkpoint fits, the new 513-byte index does not.
        pytest.param(200, "model.ckpt-fixed-6.index", id="python_writes_index"),
    ],
)
def test_file_size_limit_mid_write(
    model_copy: Callable[[str], Path], limit: int, where: str
) -> None:
    model_dir = model_copy("missing_step")
    before = tree_digest(model_dir)
    proc = _run_cli_with_file_size_limit(limit, "repair", f"--model_dir={model_dir}")
    line = assert_one_line_error(proc, errors.EXIT_WRITE_FAILED)
    assert "file too large" in line.lower()
    assert where in line and str(model_dir) in line  # names the file
    assert_originals_identical(before, model_dir, except_state=False)
    assert temporaries(model_dir) == []
    assert added_files(before, model_dir) <= {LOCK}
    assert scan.scan(str(model_dir)).verdict is Verdict.REPAIRABLE  # as before


@pytest.mark.parametrize("free_pages", [0, 1, 3, 4], ids=lambda n: f"{n}_free_pages")
def test_disk_full_mid_write(tmp_path: Path, free_pages: int) -> None:
    """A real ENOSPC: a 256 KiB tmpfs filled up to ``free_pages`` pages.

    On this kernel 0-2 free pages fail TensorFlow's step write, 3 the state file backup and 4
    the state file itself, after the new checkpoint was renamed into place: that one must be
    taken back too.
    """
    mnt = tmp_path / "tiny"
    with mounted(["-t", "tmpfs", "-o", "size=256k", "tmpfs"], mnt):
        model_dir = mnt / "missing_step"
        shutil.copytree(TESTDATA / "missing_step", model_dir)
        before = tree_digest(model_dir)
        stat = os.statvfs(mnt)
        page = stat.f_frsize
        (mnt / "filler").write_bytes(b"\0" * (stat.f_bavail * page - free_pages * page))
        proc = run_cli("repair", f"--model_dir={model_dir}")
        line = assert_one_line_error(proc, errors.EXIT_WRITE_FAILED)
        assert "no space left on device" in line.lower()
        assert str(model_dir) in line
        assert_originals_identical(before, model_dir, except_state=False)
        assert temporaries(model_dir) == []
        assert added_files(before, model_dir) <= {LOCK}  # no new checkpoint, no backup
        (mnt / "filler").unlink()
        assert scan.scan(str(model_dir)).verdict is Verdict.REPAIRABLE


def test_read_only_source_needs_output_dir(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    """Root ignores chmod, so the source is a read-only bind mount of a copy."""
    source = model_copy("missing_step")
    before = tree_digest(source)
    ro = tmp_path / "ro"
    with mounted(["--bind", str(source)], ro):
        remount = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(ro)], capture_output=True, text=True
        )
        if remount.returncode != 0:
            pytest.skip(f"read-only remount not permitted here: {remount.stderr.strip()}")
        line = assert_one_line_error(
            run_cli("repair", f"--model_dir={ro}"), errors.EXIT_WRITE_FAILED
        )
        assert "--output_dir" in line and str(ro) in line

        out = tmp_path / "out"
        proc = run_cli("repair", f"--model_dir={ro}", f"--output_dir={out}")
        assert proc.returncode == 0, proc.stderr
        assert scan.scan(str(out)).verdict is Verdict.HEALTHY
        assert_int64_step(out / "model.ckpt-6", 6)
    assert_nothing_written(before, source)


# --- lock and leftovers ------------------------------------------------------------------------


def test_lock_held_by_another_process(model_copy: Callable[[str], Path]) -> None:
    model_dir = model_copy("missing_step")
    fd = os.open(model_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        before = tree_digest(model_dir)
        line = assert_one_line_error(
            run_cli("repair", f"--model_dir={model_dir}"), errors.EXIT_LOCKED
        )
        assert LOCK in line
        with pytest.raises(errors.LockedError):
            repair_dir(model_dir)  # flock is per open file: this process is locked out too
        assert_nothing_written(before, model_dir)
    finally:
        os.close(fd)
    assert repair_dir(model_dir).step == 6  # released: the repair goes through


def test_stale_temporaries_reported_and_removed(model_copy: Callable[[str], Path]) -> None:
    model_dir = model_copy("missing_step")
    stale_dir = model_dir / ".estimator-fix-tmp-1-abcd-model.ckpt-fixed-6"
    stale_dir.mkdir()
    (stale_dir / "step.index").write_bytes(b"half-written")
    orphan = model_dir / "model.ckpt-fixed-6.data-00000-of-00002"  # data without its index
    orphan.write_bytes(b"junk from a crashed commit")
    # A second repaired name (-fixed2-N is used when -fixed-N holds a different repair).
    orphan2 = model_dir / "model.ckpt-fixed2-6.data-00001-of-00002"
    orphan2.write_bytes(b"more junk")
    before = tree_digest(model_dir)

    report = scan.scan(str(model_dir))
    assert str(stale_dir) in report.stale_temporaries
    assert any(p.code == "stale_temporary" and p.path == str(stale_dir) for p in report.problems)
    assert report.verdict is Verdict.REPAIRABLE

    result = repair.repair(plan.plan(report))
    assert set(result.removed_stale) == {str(stale_dir), str(orphan), str(orphan2)}
    assert not stale_dir.exists() and not orphan2.exists()
    assert os.path.samefile(orphan, model_dir / "model.ckpt-6.data-00000-of-00001")  # rebuilt
    leftovers = (stale_dir.name, orphan.name, orphan2.name)
    originals = {k: v for k, v in before.items() if not k.startswith(leftovers)}
    assert_originals_identical(originals, model_dir, except_state=True)
    assert temporaries(model_dir) == []
    after = scan.scan(str(model_dir))
    assert after.verdict is Verdict.HEALTHY and after.stale_temporaries == ()


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
