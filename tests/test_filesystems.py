"""scan and repair on three back ends: the same tests on local disk, ``ram://`` and ``gs://``.

``ram://`` is TensorFlow's in-memory filesystem: a path with a scheme, so every access goes
through ``tf.io.gfile`` as it would on ``gs://``, with no hard links, no directory renames and
no locks. It also has quirks of its own (``exists``/``isdir``/``stat``/``listdir`` match keys by
string prefix; ``tf.train.load_checkpoint(prefix)`` fails there), which ``estimator_fix.storage.fs``
must hide. ``gs://`` is TensorFlow's own GCS filesystem talking to fake-gcs-server through the
loopback proxy of ``tests/gcs`` (a prefix of its own per test in the run's bucket): real HTTP
requests, renames as a rewrite plus a delete, directories as name prefixes. One fixture,
``backend``, is parametrised over the three; each test body is the same code for all. Files are
read back through ``tf.io.gfile.glob``/``GFile`` (exact on every back end), never through the
code under test.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tensorflow as tf

from estimator_fix import errors, plan, repair, scan
from estimator_fix.options import Job
from estimator_fix.storage import atomic, fs, names
from estimator_fix.types import Format, Verdict
from tests import gcs
from tests.conftest import (
    TESTDATA,
    assert_int64_step,
    assert_same_tensors,
    glob_escape,
    manifest,
    read_checkpoint,
    repair_dir,
    temporaries,
    tree_entries,
    write_v1_checkpoint,
)

MANIFEST = manifest()
STATE = "checkpoint"
gfile = tf.io.gfile


# --- the back ends ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Backend:
    """A writable root on one filesystem, and how to put testdata there."""

    name: str  # "local", "ram" or "gs"
    root: str  # a directory path string, no trailing slash

    def path(self, *parts: str) -> str:
        return "/".join((self.root, *parts))

    def copy_dir(self, src: Path, *dest: str) -> str:
        """Copies a local directory tree here (gfile for schemes), returns its path string."""
        dst = self.path(*dest)
        for dirpath, _, filenames in os.walk(src):
            rel = os.path.relpath(dirpath, src)
            target = dst if rel == "." else "/".join((dst, *Path(rel).parts))
            gfile.makedirs(target)
            for name in filenames:
                gfile.copy(os.path.join(dirpath, name), f"{target}/{name}", overwrite=False)
        return dst

    def model_copy(self, fixture: str) -> str:
        """A testdata fixture copied here; the model directory's path string."""
        return self.copy_dir(TESTDATA / fixture, fixture)


@pytest.fixture(params=["local", "ram", "gs"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield Backend("local", str(tmp_path))
        return
    if request.param == "gs":
        server: gcs.Server = request.getfixturevalue("gcs_env")
        # No clean-up: the emulator keeps the run's bucket in memory and dies with the session.
        yield Backend("gs", f"{server.root}/{request.node.originalname}-{uuid.uuid4().hex[:8]}")
        return
    root = f"ram://estimator-fix-test-{uuid.uuid4().hex}"
    gfile.makedirs(root)
    yield Backend("ram", root)
    fs.rmtree(root)  # frees the memory
    assert gfile.glob(glob_escape(root) + "*") == []


# --- reading back through gfile, independently of estimator_fix.storage.fs -------------------


def digest(root: str) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes, read through gfile."""
    out: dict[str, bytes] = {}
    for rel, is_dir in tree_entries(root).items():
        if not is_dir:
            with gfile.GFile(f"{root}/{rel}", "rb") as f:
                out[rel] = f.read()
    return out


def without_root(doc: Any, root: str) -> Any:
    """A JSON document with the back end's root replaced, so the back ends compare equal."""
    return json.loads(json.dumps(doc).replace(root, "<root>"))


# --- exact paths ----------------------------------------------------------------------------------


def test_prefix_of_a_file_is_not_a_path(backend: Backend) -> None:
    """What ram:// gets wrong by itself: a string prefix of a stored file is nothing."""
    model_dir = backend.model_copy("missing_step")
    backend.copy_dir(TESTDATA / "missing_step", "missing_step_out")  # a sibling sharing a prefix
    prefix = f"{model_dir}/model.ckpt-6"
    for nothing in (prefix, f"{model_dir}/model", f"{prefix}.data", f"{model_dir}/nope"):
        assert not fs.exists(nothing), nothing
        assert not fs.isdir(nothing), nothing
    assert fs.exists(f"{prefix}.index") and not fs.isdir(f"{prefix}.index")
    assert fs.exists(model_dir) and fs.isdir(model_dir)
    assert fs.listdir(model_dir) == sorted(os.listdir(TESTDATA / "missing_step"))
    with pytest.raises(errors.PathNotFoundError):
        fs.listdir(prefix)
    with pytest.raises(errors.PathNotFoundError):
        scan.scan(prefix)  # a prefix is not a model directory, nor a file
    with pytest.raises(errors.NotAModelDirError, match="is a file"):
        scan.scan(f"{prefix}.index")


def test_dirname_keeps_the_scheme() -> None:
    assert fs.dirname("gs://bucket/models/run7") == "gs://bucket/models"
    assert fs.dirname("gs://bucket") == "gs://"
    assert fs.dirname("/models/run7") == "/models"


# --- scan: the same report on both back ends ------------------------------------------------------


SCANNED = (
    "dnn_classifier",
    "dnn_linear_partitioned",
    "keras_object_based",
    "missing_step",
    "renamed_step",
    "int32_step",
    "foreign_state_file",
    "session_loop_int32_step",
    "v1_format",
)


@pytest.mark.parametrize("fixture", SCANNED)
def test_scan_gives_the_local_report(backend: Backend, tmp_path: Path, fixture: str) -> None:
    reference = Backend("local", str(tmp_path / "reference"))
    expected = scan.scan(reference.model_copy(fixture))
    report = scan.scan(backend.model_copy(fixture))
    assert without_root(report.to_dict(), backend.root) == without_root(
        expected.to_dict(), reference.root
    )
    healthy = MANIFEST[fixture]["healthy"]
    assert report.verdict is (Verdict.HEALTHY if healthy else Verdict.REPAIRABLE)
    assert report.target == backend.path(fixture, "model.ckpt-6")
    assert report.state_file.tf_latest == tf.train.latest_checkpoint(backend.path(fixture))
    target = report.target_report
    assert target is not None and target.step is not None
    assert [e.value for e in target.step.evidence] == [6] * len(target.step.evidence)
    assert (target.format is Format.V1) == (fixture == "v1_format")


def test_scan_missing_shard(backend: Backend) -> None:
    with pytest.raises(errors.MissingShardError) as info:
        scan.scan(backend.model_copy("missing_shard"))
    missing = backend.path("missing_shard", "model.ckpt-6.data-00001-of-00002")
    assert info.value.path == missing
    assert str(info.value).startswith(f"{missing}: data shard missing")


# --- repair in place ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fixture", "replaced", "kept"),
    [
        pytest.param("missing_step", (), None, id="missing_step"),
        pytest.param("renamed_step", (), "training/global_step", id="renamed_step"),
        pytest.param("int32_step", ("global_step",), None, id="int32_step"),
    ],
)
def test_repair_in_place(
    backend: Backend, fixture: str, replaced: tuple[str, ...], kept: str | None
) -> None:
    model_dir = backend.model_copy(fixture)
    source, new = f"{model_dir}/model.ckpt-6", f"{model_dir}/model.ckpt-fixed-6"
    before = digest(model_dir)

    result = repair_dir(model_dir)
    assert result.step == 6 and result.new_prefix == new
    # Hard links on local disk; gfile copies (server-side on GCS) where there are none.
    assert result.linked is (backend.name == "local")
    after = digest(model_dir)
    for name, content in before.items():  # originals byte-identical, read through gfile
        if name != STATE:
            assert after[name] == content, name
    assert result.state_backup is not None
    assert after[result.state_backup[len(model_dir) + 1 :]] == before[STATE]
    assert set(after) - set(before) == {
        "model.ckpt-fixed-6.index",
        "model.ckpt-fixed-6.data-00000-of-00002",
        "model.ckpt-fixed-6.data-00001-of-00002",
        result.state_backup[len(model_dir) + 1 :],
        *([names.LOCK_NAME] if backend.name == "local" else []),  # no lock on object stores
    }
    assert temporaries(model_dir) == []

    assert_int64_step(new, 6)
    assert_same_tensors(source, new, skip=replaced)
    keys = set(read_checkpoint(new))
    assert keys - set(read_checkpoint(source)) <= {"global_step"}
    if kept is not None:
        assert kept in keys
    assert tf.train.latest_checkpoint(model_dir) == new

    repaired = scan.scan(model_dir)
    assert repaired.verdict is Verdict.HEALTHY, [p.code for p in repaired.problems]
    second = plan.plan(repaired)
    assert second.is_noop
    assert repair.repair(second).files_added == ()
    assert digest(model_dir) == after


def test_repair_v1_converts_through_gfile(backend: Backend, tmp_path: Path) -> None:
    local = tmp_path / "v1_source"
    local.mkdir()
    write_v1_checkpoint(local, 5)
    model_dir = backend.copy_dir(local, "v1_no_step")
    result = repair_dir(model_dir)
    assert result.new_prefix == f"{model_dir}/model.ckpt-fixed-5"
    assert gfile.exists(f"{result.new_prefix}.index")  # V2 now
    assert_int64_step(result.new_prefix, 5)
    assert_same_tensors(f"{model_dir}/model.ckpt-5", result.new_prefix)
    assert scan.scan(model_dir).verdict is Verdict.HEALTHY


# --- repair into --output_dir ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["missing_step", "int32_step", "foreign_state_file", "dnn_linear_partitioned"]
)
def test_repair_to_output_dir(backend: Backend, fixture: str) -> None:
    source = backend.model_copy(fixture)
    before = digest(source)
    out = backend.path("elsewhere", "repaired")  # the parent does not exist yet
    result = repair_dir(source, output_dir=out)
    assert digest(source) == before  # state file included, and no lock file
    assert result.output_dir == out and result.linked is (backend.name == "local")
    assert temporaries(backend.path("elsewhere")) == []
    report = scan.scan(out)
    assert report.verdict is Verdict.HEALTHY, [p.code for p in report.problems]
    assert tf.train.latest_checkpoint(out) == f"{out}/model.ckpt-6"
    assert_int64_step(f"{out}/model.ckpt-6", 6)
    skip = ("global_step",) if fixture == "int32_step" else ()
    assert_same_tensors(f"{source}/model.ckpt-6", f"{out}/model.ckpt-6", skip=skip)
    assert sorted(fs.basename(p) for p in result.files_added) == sorted(digest(out))


def test_healthy_v1_to_output_dir(backend: Backend) -> None:
    """A healthy V1 checkpoint is copied unchanged: its one file, no index."""
    source = backend.model_copy("v1_format")
    out = backend.path("out")
    repair_dir(source, output_dir=out)
    assert sorted(digest(out)) == [STATE, "model.ckpt-6"]
    assert tf.train.latest_checkpoint(out) == f"{out}/model.ckpt-6"
    assert scan.scan(out).verdict is Verdict.HEALTHY


class Crash(BaseException):
    """Stands for the process dying: no ``except errors.Error`` cleanup runs."""


def test_interrupted_output_dir_is_emptied_and_redone(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed just before the state file: on an object store the checkpoint files are already
    in the output directory (beside the marker); the next run removes them and starts again."""
    source = backend.model_copy("missing_step")
    out = backend.path("out")

    def die_at_commit(name: str) -> None:
        if name == "state-commit":
            raise Crash

    with monkeypatch.context() as m:
        m.setattr(atomic, "failpoint", die_at_commit)
        with pytest.raises(Crash):
            repair_dir(source, output_dir=out)
    left = sorted(digest(out)) if gfile.exists(out) else []
    assert STATE not in left  # not a finished output
    assert not left or names.INCOMPLETE_MARKER in left
    if backend.name != "local":  # built in place, file by file: the checkpoint got there
        assert "model.ckpt-6.index" in left

    the_plan = repair.prepare(scan.scan(source), Job("repair", source, output_dir=out))
    assert any("interrupted repair" in a for a in the_plan.actions) == bool(left)
    result = repair.repair(the_plan)
    assert {fs.basename(p) for p in result.removed_stale} >= set(left)
    assert scan.scan(out).verdict is Verdict.HEALTHY
    assert names.INCOMPLETE_MARKER not in digest(out)
    assert_int64_step(f"{out}/model.ckpt-6", 6)


@pytest.mark.parametrize("marker", [True, False], ids=["marker", "only_temporaries"])
def test_unfinished_output_dir_is_accepted_and_emptied(backend: Backend, marker: bool) -> None:
    """No state file, and only what a repair writes first: ours to remove."""
    source = backend.model_copy("missing_step")
    out = backend.path("out")
    gfile.makedirs(f"{out}/{names.temp_name('model.ckpt-6')}")
    leftovers = [names.temp_name(names.INCOMPLETE_MARKER)]
    if marker:
        leftovers += [names.INCOMPLETE_MARKER, "model.ckpt-6.data-00000-of-00002"]
    for name in leftovers:
        with gfile.GFile(f"{out}/{name}", "wb") as f:
            f.write(b"half-written")
    result = repair_dir(source, output_dir=out)
    assert set(leftovers) <= {fs.basename(p) for p in result.removed_stale}
    assert sorted(digest(out)) == [
        STATE,
        "model.ckpt-6.data-00000-of-00002",
        "model.ckpt-6.data-00001-of-00002",
        "model.ckpt-6.index",
    ]
    assert scan.scan(out).verdict is Verdict.HEALTHY


@pytest.mark.parametrize(
    "contents",
    [
        pytest.param({"model.ckpt-6.index": b"someone's"}, id="foreign_files"),
        pytest.param({names.INCOMPLETE_MARKER: b"", STATE: b""}, id="marker_with_state_file"),
    ],
)
def test_other_output_dirs_refused(backend: Backend, contents: dict[str, bytes]) -> None:
    """Files that are not ours, or a finished output: refused, nothing touched."""
    source = backend.model_copy("missing_step")
    out = backend.path("taken")
    gfile.makedirs(out)
    for name, data in contents.items():
        with gfile.GFile(f"{out}/{name}", "wb") as f:
            f.write(data)
    with pytest.raises(errors.UsageError, match="--output_dir"):
        repair.prepare(scan.scan(source), Job("repair", source, output_dir=out))
    assert digest(out) == contents


def test_gfile_write_errors_are_write_errors() -> None:
    """gfile raises TensorFlow's errors, not OSError: a failed gs:// write still exits 7."""
    path = "gs://bucket/run7/checkpoint"
    with pytest.raises(errors.WriteError, match=f"{path}: write failed"), atomic.write_errors(path):
        raise tf.errors.PermissionDeniedError(None, None, "403 Forbidden")
