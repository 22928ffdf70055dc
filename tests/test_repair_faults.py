"""Tests of ``repair`` under real faults: a failed write is taken back, a held lock refuses.

Faults are real, not mocked: ``RLIMIT_FSIZE`` makes writes fail with ``EFBIG`` partway, a tiny
tmpfs makes them fail with ``ENOSPC``, a read-only bind mount stops them with ``EROFS`` (the
mount tests skip where mounting is not permitted), and the lock is held with a real ``flock``.
Each runs the real CLI in a subprocess: the documented exit code, one line on stderr naming the
file, the originals byte for byte and no temporaries. Also the leftovers of a crashed repair
(stale temporaries, orphaned data files): reported by scan, removed by the next repair.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import shutil
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from estimator_fix import errors, plan, repair, scan
from estimator_fix.storage import names
from estimator_fix.types import Verdict
from tests.conftest import (
    TESTDATA,
    added_files,
    assert_int64_step,
    assert_nothing_written,
    assert_one_line_error,
    assert_originals_identical,
    repair_dir,
    run_cli,
    temporaries,
    tree_digest,
)

LOCK = names.LOCK_NAME


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
