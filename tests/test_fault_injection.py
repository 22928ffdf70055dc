"""Fault injection: SIGKILL a real ``estimator-fix repair`` at every failpoint and at random times.

Each run copies ``testdata/missing_step`` (no ``global_step``; the repair gives it step 6), starts
the CLI as a separate process and kills it with SIGKILL, either

* at a named failpoint (``ESTIMATOR_FIX_KILL_AT=<name>``: the process kills itself there), one
  run per failpoint in the code, or
* from here, after a random delay: the delays are drawn with a seeded ``random.Random`` from
  strata spread over the duration of a normal run measured first, so every run stops the
  process at a different moment (most fall in the TensorFlow import and the build in the
  temporary directory; the failpoints cover the millisecond-wide commit).

After each kill: the original files are byte-identical, ``tf.train.latest_checkpoint`` finds a
checkpoint and a graph-mode ``Saver`` restores every key it holds, then a re-run of the CLI exits
0, the directory scans healthy with an int64 ``global_step`` of 6, and no temporaries or orphan
files remain. A kill at a failpoint leaves a known state (``FAILPOINT_STATES``); the table of
what each kill left behind is printed after the module's last test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import random
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from estimator_fix import scan
from estimator_fix.storage import names
from estimator_fix.types import Verdict
from tests.conftest import REPO, TESTDATA, cli_command, cli_env, run_cli, tree_digest

pytestmark = pytest.mark.slow

FIXTURE = "missing_step"
SOURCE = "model.ckpt-6"
FIXED = "model.ckpt-fixed-6"
STATE = "checkpoint"
STEP = 6
# In the order a repair in place reaches them (one data shard: the link and the step's shard).
FAILPOINTS = (
    "step-written",
    "before-index",
    "index-written",
    "commit-data-0",
    "commit-data-1",
    "commit-index",
    "state-backup",
    "state-commit",
    "after-commit",
)
OUTPUT_FAILPOINTS = ("step-written", "index-written", "output-commit")
# What a kill at each in-place failpoint leaves behind (see _classify).
COMMITTED = "committed (state file names the repair)"
COMPLETE = "complete checkpoint, state file not yet switched"
ORPHANS = "data files renamed in, no index (orphans)"
TEMP_NEW = "temporary dir with the new checkpoint's files"
TEMP_STEP = "temporary dir with the step checkpoint being written"
TEMP_EMPTY = "empty temporary dir (killed while TensorFlow loaded)"
LOCK_ONLY = "lock file only"
NOTHING = "nothing written"
FAILPOINT_STATES = {
    "step-written": TEMP_STEP,
    "before-index": TEMP_NEW,
    "index-written": TEMP_NEW,
    "commit-data-0": TEMP_NEW,
    "commit-data-1": ORPHANS,
    "commit-index": ORPHANS,
    "state-backup": COMPLETE,
    "state-commit": COMPLETE,
    "after-commit": COMMITTED,
}
RANDOM_KILLS = 12
MIN_INPLACE_RUNS = 20
SEED = 20240611
_rng = random.Random(SEED)
# One delay per stratum of (2 %, 100 %) of a normal run: distinct, reproducible, spread out.
FRACTIONS = tuple(
    round(0.02 + 0.98 * (i + _rng.random()) / RANDOM_KILLS, 4) for i in range(RANDOM_KILLS)
)


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One kill whose checks all passed, for the table printed after the module."""

    run: str  # failpoint name or random-NN
    mode: str  # in_place / output_dir
    killed_at: str  # the failpoint, or the delay in seconds
    state: str  # what the kill left behind (see _classify)


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest) -> Iterator[list[Outcome]]:
    """Collects the kills that passed; prints what they left behind. Asserts nothing."""
    found: list[Outcome] = []
    yield found
    if not found:
        return
    in_place = [o for o in found if o.mode == "in_place"]
    by_state = Counter(o.state for o in in_place)
    lines = [
        f"fault injection: {len(found)} SIGKILL runs passed ({len(in_place)} in place, "
        f"{len(found) - len(in_place)} with --output_dir), seed {SEED}",
        *(f"  {o.mode:10} {o.run:14} killed at {o.killed_at:14} -> {o.state}" for o in found),
        "  in-place states after the kill:",
        *(f"    {n:2d} x {state}" for state, n in by_state.most_common()),
    ]
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    # As capsys.disabled(), which a module-scoped fixture cannot have.
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines))


# --- helpers ----------------------------------------------------------------------------------


def _repair(
    model_dir: Path, *extra: str, kill_at: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI's repair of ``model_dir``; with ``kill_at``, it kills itself at that failpoint."""
    env = {"ESTIMATOR_FIX_KILL_AT": kill_at} if kill_at is not None else None
    return run_cli("repair", f"--model_dir={model_dir}", *extra, env=env)


def _killed_at(failpoint: str, model_dir: Path, *extra: str) -> None:
    proc = _repair(model_dir, *extra, kill_at=failpoint)
    assert proc.returncode == -signal.SIGKILL, f"{failpoint} not reached: {proc.stderr}"


def _fresh_copy(parent: Path, name: str) -> Path:
    model_dir = parent / name
    shutil.copytree(TESTDATA / FIXTURE, model_dir)
    return model_dir


def _classify(model_dir: Path, before: dict[str, tuple[int, bytes]]) -> str:
    """What the kill left behind, from the most to the least advanced stage."""
    files = set(os.listdir(model_dir))
    state = (model_dir / STATE).read_bytes()
    if state != before[STATE][1]:
        return COMMITTED
    if f"{FIXED}.index" in files:
        return COMPLETE
    if any(n.startswith(f"{FIXED}.data-") for n in files):
        return ORPHANS
    temporaries = [model_dir / n for n in files if names.is_temporary(n)]
    if temporaries:
        inside = {m for t in temporaries if t.is_dir() for m in os.listdir(t)}
        if any(m.startswith(FIXED) for m in inside):
            return TEMP_NEW
        if inside:
            return TEMP_STEP
        return TEMP_EMPTY
    if names.LOCK_NAME in files:
        return LOCK_ONLY
    return NOTHING


def _assert_originals(model_dir: Path, before: dict[str, tuple[int, bytes]]) -> None:
    """Byte-identical; the state file is either the old one or names the repair (old backed up)."""
    after = tree_digest(model_dir)
    for name, content in before.items():
        if name == STATE and after[STATE] != content:
            assert f'model_checkpoint_path: "{FIXED}"' in after[STATE][1].decode()
            backups = [n for n in after if n.startswith(f"{STATE}.bak-")]
            assert any(after[b] == content for b in backups), "no backup of the old state file"
            continue
        assert after.get(name) == content, f"{name} changed or disappeared"


def _restore_everything(prefix: str) -> int:
    """A real graph-mode restore: a variable for every key of ``prefix``, one Saver. Key count."""
    reader = tf.train.load_checkpoint(prefix)
    dtypes, shapes = reader.get_variable_to_dtype_map(), reader.get_variable_to_shape_map()
    keys = sorted(dtypes)
    graph = tf.Graph()
    with graph.as_default():
        variables = {
            name: tf.compat.v1.Variable(
                np.zeros(shapes[name], dtypes[name].as_numpy_dtype), name=f"v{i}"
            )
            for i, name in enumerate(keys)
        }
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            values = sess.run(variables)
    for name in keys:
        assert np.array_equal(values[name], reader.get_tensor(name)), name
    return len(keys)


def _assert_loads(model_dir: Path) -> str:
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest is not None, "tf.train.latest_checkpoint found nothing"
    assert latest in (str(model_dir / SOURCE), str(model_dir / FIXED))
    assert _restore_everything(latest) >= 10
    return latest


def _assert_repaired(model_dir: Path, before: dict[str, tuple[int, bytes]]) -> None:
    """After the re-run: healthy, step 6, originals intact, nothing left over."""
    report = scan.scan(str(model_dir))
    assert report.verdict is Verdict.HEALTHY, [p.code for p in report.problems]
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest == str(model_dir / FIXED)
    reader = tf.train.load_checkpoint(latest)
    assert reader.get_variable_to_dtype_map()["global_step"] == tf.int64
    assert int(reader.get_tensor("global_step")) == STEP
    _restore_everything(latest)
    _assert_originals(model_dir, before)
    files = set(os.listdir(model_dir))
    assert not [n for n in files if names.is_temporary(n)], "temporaries left"
    backups = {n for n in files if n.startswith(f"{STATE}.bak-")}
    expected = {
        f"{FIXED}.index",
        f"{FIXED}.data-00000-of-00002",
        f"{FIXED}.data-00001-of-00002",
        names.LOCK_NAME,
    }
    assert files - set(before) - backups == expected, "orphan or unexpected files"
    assert backups, "the old state file was not backed up"
    for b in backups:
        assert (model_dir / b).read_bytes() == before[STATE][1]
    # Zero-copy survived the crash and the re-run: still a hard link to the original data.
    assert os.path.samefile(
        model_dir / f"{SOURCE}.data-00000-of-00001", model_dir / f"{FIXED}.data-00000-of-00002"
    )


def _rerun(model_dir: Path, *extra: str) -> None:
    proc = _repair(model_dir, *extra)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


def _check_after_kill(model_dir: Path, before: dict[str, tuple[int, bytes]]) -> str:
    """Every check after an in-place kill and its re-run. What the kill left behind."""
    state = _classify(model_dir, before)
    _assert_originals(model_dir, before)
    _assert_loads(model_dir)
    _rerun(model_dir)
    _assert_repaired(model_dir, before)
    return state


# --- the failpoints -----------------------------------------------------------------------------


def test_failpoint_list_matches_the_code() -> None:
    """Every failpoint in the code is exercised here (a new one must be added to the lists)."""
    found: set[str] = set()
    for module in sorted((REPO / "estimator_fix").rglob("*.py")):
        found |= set(re.findall(r'failpoint\(f?"([^"]+)"\)', module.read_text()))
    in_code = {re.sub(r"\{\w+\}", "0", name) for name in found}
    exercised = set(FAILPOINTS) | set(OUTPUT_FAILPOINTS) | set(RENAME_FAILPOINTS)
    assert in_code | {"commit-data-1"} == exercised
    assert list(FAILPOINT_STATES) == list(FAILPOINTS)


def test_enough_distinct_kill_points() -> None:
    """At least 20 in-place kills, each at a different point: every failpoint once, and one
    random delay in each of RANDOM_KILLS disjoint strata of (2 %, 100 %) of a normal run."""
    assert len(set(FAILPOINTS)) == len(FAILPOINTS)
    assert len(FAILPOINTS) + len(FRACTIONS) >= MIN_INPLACE_RUNS
    assert len(FRACTIONS) == RANDOM_KILLS
    assert list(FRACTIONS) == sorted(set(FRACTIONS))
    for i, fraction in enumerate(FRACTIONS):
        low = 0.02 + 0.98 * i / RANDOM_KILLS
        assert low <= fraction <= low + 0.98 / RANDOM_KILLS, (i, fraction)


@pytest.mark.parametrize("failpoint", FAILPOINTS)
def test_kill_at_failpoint(tmp_path: Path, outcomes: list[Outcome], failpoint: str) -> None:
    model_dir = _fresh_copy(tmp_path, FIXTURE)
    before = tree_digest(model_dir)
    _killed_at(failpoint, model_dir)
    state = _check_after_kill(model_dir, before)
    assert state == FAILPOINT_STATES[failpoint]
    outcomes.append(Outcome(failpoint, "in_place", failpoint, state))


# --- random moments ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def normal_run_seconds(tmp_path_factory: pytest.TempPathFactory) -> float:
    """How long a normal repair takes here, as a whole process (TF import included)."""
    model_dir = _fresh_copy(tmp_path_factory.mktemp("timing"), FIXTURE)
    start = time.monotonic()
    proc = _repair(model_dir)
    seconds = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    return seconds


@pytest.mark.parametrize("index", range(RANDOM_KILLS), ids=lambda i: f"random-{i:02d}")
def test_kill_at_random_moment(
    tmp_path: Path, normal_run_seconds: float, outcomes: list[Outcome], index: int
) -> None:
    delay = FRACTIONS[index] * normal_run_seconds
    for attempt in range(4):
        model_dir = _fresh_copy(tmp_path, f"{FIXTURE}-{attempt}")
        before = tree_digest(model_dir)
        proc = subprocess.Popen(
            cli_command("repair", f"--model_dir={model_dir}"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=cli_env(),
            cwd=REPO,
        )
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
        if proc.returncode == -signal.SIGKILL:
            break
        # Finished before the kill (this run was faster than the measured one): earlier.
        assert proc.returncode == 0, stderr
        delay *= 0.85
    else:
        pytest.fail(f"the repair always finished within {delay:.2f} s")
    state = _check_after_kill(model_dir, before)
    outcomes.append(Outcome(f"random-{index:02d}", "in_place", f"{delay:.3f} s", state))


# --- output_dir mode --------------------------------------------------------------------------


@pytest.mark.parametrize("failpoint", OUTPUT_FAILPOINTS)
def test_kill_with_output_dir(tmp_path: Path, outcomes: list[Outcome], failpoint: str) -> None:
    """The source is never written; the output appears whole or not at all."""
    source = _fresh_copy(tmp_path, FIXTURE)
    before = tree_digest(source)
    parent = tmp_path / "outputs"
    out = parent / "repaired"
    _killed_at(failpoint, source, f"--output_dir={out}")
    assert tree_digest(source) == before  # not even a lock file
    assert not out.exists()
    assert tf.train.latest_checkpoint(str(source)) == str(source / SOURCE)
    _restore_everything(str(source / SOURCE))

    _rerun(source, f"--output_dir={out}")
    assert tree_digest(source) == before
    assert scan.scan(str(out)).verdict is Verdict.HEALTHY
    latest = tf.train.latest_checkpoint(str(out))
    assert latest == str(out / SOURCE)
    assert int(tf.train.load_checkpoint(latest).get_tensor("global_step")) == STEP
    _restore_everything(latest)
    leftovers = [n for n in os.listdir(parent) if names.is_temporary(n)]
    assert leftovers == [], "the re-run removes temporaries whose process died"
    outcomes.append(Outcome(failpoint, "output_dir", failpoint, "output absent"))


# --- rename: the same commit, its own build step --------------------------------------------

RENAME_FAILPOINTS = ("surgery-before-index", "commit-data-0", "commit-index", "state-commit")


@pytest.mark.parametrize("failpoint", RENAME_FAILPOINTS)
def test_kill_rename_at_failpoint(tmp_path: Path, failpoint: str) -> None:
    """A killed rename leaves the originals and a directory that loads; a re-run completes."""
    model_dir = tmp_path / "m"
    shutil.copytree(TESTDATA / "dnn_classifier", model_dir)
    before = tree_digest(model_dir)
    args = ("rename", f"--model_dir={model_dir}", "--map=dnn=tower")
    proc = run_cli(*args, env={"ESTIMATOR_FIX_KILL_AT": failpoint})
    assert proc.returncode == -signal.SIGKILL, f"{failpoint} not reached: {proc.stderr}"
    after = tree_digest(model_dir)
    assert all(after.get(n) == c for n, c in before.items() if n != STATE)
    assert after[STATE] == before[STATE]  # every failpoint here is before the commit point
    latest = tf.train.latest_checkpoint(str(model_dir))
    assert latest == str(model_dir / "model.ckpt-6")
    _restore_everything(latest)

    rerun = run_cli(*args)
    assert rerun.returncode == 0 and "Traceback" not in rerun.stderr, rerun.stderr
    latest = tf.train.latest_checkpoint(str(model_dir))
    # Killed after its index was renamed into place, the first run's complete edit stays (it is
    # not adopted, unlike repair's): the re-run takes the next name.
    taken = failpoint == "state-commit"
    assert latest == str(model_dir / f"model.ckpt-renamed{'2' if taken else ''}-6")
    keys = set(tf.train.load_checkpoint(latest).get_variable_to_dtype_map())
    assert any(k.startswith("tower/") for k in keys) and not any(k.startswith("dnn/") for k in keys)
    _restore_everything(latest)
    left = os.listdir(model_dir)
    assert not [n for n in left if names.is_temporary(n)], "temporaries left"
    assert not names.orphan_surgery_files(left), "orphaned data files left"
    assert all(tree_digest(model_dir).get(n) == c for n, c in before.items() if n != STATE)
