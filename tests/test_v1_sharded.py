"""Sharded V1 checkpoints (``Saver(sharded=True, write_version=V1)``), written by real Savers.

TensorFlow names them by the pattern ``<stem>-?????-of-0000N``: in the state file, in
``Saver.save``'s result and for its readers. Its reader leaves out a missing shard's tensors
without a word, so scan checks every shard and the conversion reads the source whole or not at
all. Also TensorFlow Serving's 2016 session bundle from ``../shared/field``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from estimator_fix import errors
from estimator_fix.checkpoint import state_file
from estimator_fix.scan import scan
from estimator_fix.storage import names
from estimator_fix.types import Format, StepStatus, Verdict
from tests.conftest import (
    REPO,
    assert_int64_step,
    assert_same_tensors,
    read_checkpoint,
    repair_dir,
    run_cli,
    tree_digest,
)

FIELD_BUNDLE = (
    REPO.parent
    / "shared/field/tensorflow-serving/session_bundle/testdata/half_plus_two/00000123"
    / "export-00000-of-00001"
)
STEP = 40


def _write_sharded_v1(model_dir: Path, *, devices: tuple[str, ...], with_step: bool) -> None:
    """A ``model.ckpt-40`` sharded V1 save with its ``.meta`` and the state file TensorFlow
    writes (an absolute pattern). The sharded Saver makes one shard per device string (FACTS
    §8): variables on ``/cpu:0`` and ``/cpu:1`` and unplaced ones make three."""
    import tensorflow as tf

    model_dir.mkdir(parents=True)
    rng = np.random.default_rng(3)
    graph = tf.Graph()
    with graph.as_default():
        for i, device in enumerate(devices):
            with tf.device(device):
                tf.compat.v1.Variable(rng.standard_normal((3, i + 2)), name=f"layer{i}/kernel")
                tf.compat.v1.Variable(rng.integers(-9, 9, 4).astype(np.int32), name=f"layer{i}/ids")
        with tf.device(devices[0]):
            tf.compat.v1.Variable(np.array([b"alpha", b"", b"x" * 300]), name="vocab")
        tf.compat.v1.Variable(rng.standard_normal(5).astype(np.float32), name="bias")  # unplaced
        if with_step:
            step = tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver(sharded=True, write_version=tf.compat.v1.train.SaverDef.V1)
        config = tf.compat.v1.ConfigProto(device_count={"CPU": 2})
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            if with_step:
                sess.run(step.assign(STEP))
            saver.save(sess, str(model_dir / "model.ckpt"), global_step=STEP)


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Frozen model directories, written once; tests work on copies."""
    root = tmp_path_factory.mktemp("v1_sharded")
    out = {}
    for name, devices, with_step in (
        ("one_shard", ("",), False),
        ("three_shards", ("/cpu:0", "/cpu:1"), False),
        ("three_shards_healthy", ("/cpu:0", "/cpu:1"), True),
    ):
        _write_sharded_v1(root / name, devices=devices, with_step=with_step)
        out[name] = root / name
    if FIELD_BUNDLE.is_file():
        (root / "field").mkdir()
        shutil.copyfile(FIELD_BUNDLE, root / "field" / FIELD_BUNDLE.name)
        out["field"] = root / "field"
    return out


@pytest.fixture
def copy_source(sources: dict[str, Path], tmp_path: Path) -> Any:
    def copy(name: str, *, state: str = "tf") -> Path:
        """``state``: "tf" as TensorFlow wrote it, "none", or the text of a new state file."""
        if name not in sources:
            pytest.skip(f"{FIELD_BUNDLE} is absent (../shared/field holds the field samples)")
        d = tmp_path / name
        shutil.copytree(sources[name], d)
        for p in d.iterdir():  # the field samples are read-only
            p.chmod(0o644)
        if state == "tf" and (d / "checkpoint").is_file():  # as TensorFlow writes it here
            text = (d / "checkpoint").read_text()
            (d / "checkpoint").write_text(text.replace(str(sources[name]), str(d)))
        elif state == "none":
            (d / "checkpoint").unlink(missing_ok=True)
        elif state != "tf":
            (d / "checkpoint").write_text(state)
        return d

    return copy


def _pattern(d: Path) -> str:
    """TensorFlow's name for the one sharded V1 checkpoint in ``d``."""
    (pattern,) = {state_file.v1_pattern_of(p.name) for p in d.iterdir()} - {None}
    assert pattern is not None
    return str(d / pattern)


def _digest(d: Path) -> dict[str, tuple[int, bytes]]:
    """Every file but the lock, which a repair leaves (empty of meaning) even when it fails."""
    return {k: v for k, v in tree_digest(d).items() if k != names.LOCK_NAME}


def _restore_all(model_dir: Path) -> dict[str, np.ndarray]:
    """A Saver restores every key of the latest checkpoint into fresh variables, the way an
    Estimator would."""
    import tensorflow as tf

    prefix = tf.train.latest_checkpoint(str(model_dir))
    assert prefix is not None, f"tf.train.latest_checkpoint({model_dir}) is None"
    found = read_checkpoint(prefix)
    graph = tf.Graph()
    with graph.as_default():
        variables = {
            k: tf.compat.v1.Variable(tf.zeros(shape, dtype), name=f"v{i}")
            for i, (k, (dtype, shape, _)) in enumerate(found.items())
        }
        saver = tf.compat.v1.train.Saver(var_list=variables)
        with tf.compat.v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            return {k: sess.run(v) for k, v in variables.items()}


# --- naming (pure) -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "pattern", "stem", "repaired"),
    [
        ("m.ckpt-7-00001-of-00003", "m.ckpt-7-?????-of-00003", "m.ckpt-7", "m.ckpt-fixed-7"),
        ("export-00000-of-00001", "export-?????-of-00001", "export", "export-fixed-7"),
        ("model.ckpt-7", None, "model.ckpt-7", "model.ckpt-fixed-7"),
        ("model.ckpt-7.data-00000-of-00001", None, None, None),
    ],
)
def test_v1_names(name: str, pattern: str | None, stem: str | None, repaired: str | None) -> None:
    assert state_file.v1_pattern_of(name) == pattern
    if pattern is not None:
        assert state_file.v1_stem(pattern) == stem
        assert names.repaired_name(pattern, 7, in_place=True) == repaired
        paths = state_file.v1_shard_paths(f"/m/{pattern}")
        n = int(pattern[-5:])
        assert paths == tuple(f"/m/{stem}-{i:05d}-of-{n:05d}" for i in range(n))
    elif stem is not None:
        assert state_file.v1_shard_paths(f"/m/{name}") is None
        assert names.repaired_name(name, 7, in_place=True) == repaired


# --- scan ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shards", "status"),
    [
        ("one_shard", 1, StepStatus.MISSING),
        ("three_shards", 3, StepStatus.MISSING),
        ("three_shards_healthy", 3, StepStatus.OK),
        ("field", 1, StepStatus.MISSING),
    ],
)
def test_scan_lists_every_shard_and_tensorflow_s_tensors(
    copy_source: Any, name: str, shards: int, status: StepStatus
) -> None:
    import tensorflow as tf

    d = copy_source(name)
    report = scan(str(d))
    (c,) = report.checkpoints
    pattern = _pattern(d)
    assert (c.prefix, c.format, report.target) == (pattern, Format.V1, pattern)
    on_disk = sorted(p for p in d.iterdir() if p.name != "checkpoint" and p.suffix != ".meta")
    assert [s.path for s in c.shards] == [str(p) for p in on_disk]
    (doc,) = json.loads(json.dumps(report.to_dict()))["checkpoints"]  # what scan --json prints
    assert [s["path"] for s in doc["shards"]] == [str(p) for p in on_disk]
    assert len(c.shards) == shards
    assert all(
        s.exists and s.size == p.stat().st_size for s, p in zip(c.shards, on_disk, strict=True)
    )
    assert c.total_bytes == sum(p.stat().st_size for p in on_disk)
    expected = sorted((k, tuple(s)) for k, s in tf.train.list_variables(pattern))
    assert sorted((t.name, t.shape) for t in c.tensors) == expected
    assert c.step is not None and c.step.status is status
    if name != "field":  # the -40 of the stem, not the shard count of the pattern
        assert {e.value for e in c.step.evidence} == {STEP}
    assert report.verdict is (Verdict.HEALTHY if status is StepStatus.OK else Verdict.REPAIRABLE)


@pytest.mark.parametrize(
    "state_text",
    [
        pytest.param(None, id="as-tensorflow-wrote-it"),
        pytest.param('model_checkpoint_path: "model.ckpt-40-?????-of-00003"\n', id="relative"),
        pytest.param('model_checkpoint_path: "model.ckpt-40"\n', id="bare-stem"),
        pytest.param('model_checkpoint_path: "model.ckpt-40-00001-of-00003"\n', id="one-shard"),
        pytest.param('model_checkpoint_path: "model.ckpt-40-?????-of-00004"\n', id="wrong-count"),
        pytest.param('model_checkpoint_path: "model.ckpt-*"\n', id="star"),
        pytest.param(
            'model_checkpoint_path: "/elsewhere/model.ckpt-40-?????-of-00003"\n', id="foreign"
        ),
    ],
)
def test_latest_prediction_matches_tensorflow(copy_source: Any, state_text: str | None) -> None:
    import tensorflow as tf

    d = copy_source("three_shards_healthy", state=state_text or "tf")
    report = scan(str(d))
    assert report.state_file.tf_latest == tf.train.latest_checkpoint(str(d))
    assert report.target == _pattern(d)  # a bare stem, a shard or a foreign path still lead here


@pytest.mark.parametrize("fmt", ["V1-sharded", "V2"])
def test_latest_prediction_in_a_directory_named_with_glob_characters(
    tmp_path: Path, copy_source: Any, model_copy: Any, fmt: str
) -> None:
    """TensorFlow globs a path with ``*?[``: ``run[1]/model.ckpt-6.index`` matches nothing."""
    import tensorflow as tf

    src = model_copy("dnn_classifier") if fmt == "V2" else copy_source("three_shards_healthy")
    d = src.rename(tmp_path / "run[1]")
    name = "model.ckpt-6" if fmt == "V2" else "model.ckpt-40-?????-of-00003"
    (d / "checkpoint").write_text(f'model_checkpoint_path: "{d}/{name}"\n')
    report = scan(str(d))
    assert tf.train.latest_checkpoint(str(d)) is None
    assert report.state_file.tf_latest is None
    assert "no_latest_checkpoint" in {p.code for p in report.problems}
    if fmt != "V2":  # TensorFlow's V1 reader globs too: scan hands it the escaped pattern
        (c,) = report.checkpoints
        escaped = str(d).replace("[", "[[]") + f"/{name}"
        assert c.prefix == str(d / name)
        expected = sorted((k, tuple(v)) for k, v in tf.train.list_variables(escaped))
        assert expected and sorted((t.name, t.shape) for t in c.tensors) == expected


def test_sharded_data_files_are_not_checkpoints(copy_source: Any) -> None:
    """Files named like shards (a TFRecord data set) without a table or ``.meta`` are not
    reported as checkpoints."""
    d = copy_source("three_shards_healthy")
    for i in range(2):
        (d / f"train-{i:05d}-of-00002").write_bytes(b"\x00" * 64)
    report = scan(str(d))
    assert [c.name for c in report.checkpoints] == ["model.ckpt-40-?????-of-00003"]


# --- bad input -----------------------------------------------------------------------------------

BROKEN = [
    pytest.param("three_shards", 0, "missing", errors.MissingShardError, id="3-first-missing"),
    pytest.param("three_shards", 2, "missing", errors.MissingShardError, id="3-last-missing"),
    pytest.param("three_shards", 1, "truncated", errors.CorruptIndexError, id="3-truncated"),
    pytest.param("three_shards", 2, "garbage", errors.CorruptIndexError, id="3-garbage"),
    pytest.param("three_shards", 1, "flipped", errors.CorruptIndexError, id="3-flipped-byte"),
    pytest.param("one_shard", 0, "truncated", errors.CorruptIndexError, id="1-truncated"),
    pytest.param("one_shard", 0, "garbage", errors.CorruptIndexError, id="1-garbage"),
    pytest.param("one_shard", 0, "flipped", errors.CorruptIndexError, id="1-flipped-byte"),
]


def _break(d: Path, shard: int, how: str) -> Path:
    """Breaks one shard of a copied checkpoint; returns its path."""
    path = sorted(d.glob("*-0000?-of-0000?"))[shard]
    data = path.read_bytes()
    if how == "missing":
        path.unlink()
    elif how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"not a table " * 20)
    else:  # the footer intact: TensorFlow's reader finds the damage (block crc)
        path.write_bytes(data[:30] + bytes([data[30] ^ 0xFF]) + data[31:])
    return path


@pytest.mark.parametrize(("name", "shard", "how", "error"), BROKEN)
def test_broken_shard_is_an_error_naming_it(
    copy_source: Any, name: str, shard: int, how: str, error: type[errors.Error]
) -> None:
    d = copy_source(name)
    path = _break(d, shard, how)
    with pytest.raises(error) as raised:
        scan(str(d))
    message = str(raised.value)
    assert str(path) in message and "\n" not in message
    assert "original" in message  # says how to fix it
    if how == "missing":
        assert raised.value.path == str(path)


def test_one_shard_checkpoint_without_its_shard_is_no_checkpoint(copy_source: Any) -> None:
    d = copy_source("one_shard")
    _break(d, 0, "missing")
    with pytest.raises(errors.NotAModelDirError, match="no checkpoint found"):
        scan(str(d))


@pytest.mark.parametrize("how", ["missing", "garbage"])
def test_cli_broken_shard_one_line_exit_1_then_repaired_once_copied_back(
    copy_source: Any, how: str
) -> None:
    d = copy_source("three_shards")
    shard = sorted(d.glob("*-of-00003"))[1]
    good = shard.read_bytes()
    _break(d, 1, how)
    before = _digest(d)
    for command in ("scan", "repair") if how == "missing" else ("repair",):
        proc = run_cli(command, f"--model_dir={d}")
        assert proc.returncode == errors.EXIT_BAD_INPUT, (command, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(shard) in lines[0], (command, proc.stderr)
        assert _digest(d) == before, command
    if how == "missing":  # the fix the message gives: copy the shard back
        shard.write_bytes(good)
        proc = run_cli("repair", f"--model_dir={d}")
        assert proc.returncode == 0, proc.stderr
        assert_int64_step(d / "model.ckpt-fixed-40", STEP)
        assert_same_tensors(_pattern(d), d / "model.ckpt-fixed-40")


def test_shard_gone_after_the_scan_converts_nothing(copy_source: Any) -> None:
    from estimator_fix import repair
    from estimator_fix.options import Job

    d = copy_source("three_shards")
    report = scan(str(d))
    plan = repair.prepare(report, Job("repair", str(d)))
    gone = d / "model.ckpt-40-00002-of-00003"
    gone.unlink()
    before = _digest(d)
    with pytest.raises(errors.MissingShardError, match=str(gone).replace("?", r"\?")):
        repair.repair(plan)
    assert _digest(d) == before


# --- repair --------------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["tf", "none"], ids=["with-state-file", "no-state-file"])
@pytest.mark.parametrize(
    ("name", "step", "new_name"),
    [
        ("one_shard", None, "model.ckpt-fixed-40"),
        ("three_shards", None, "model.ckpt-fixed-40"),
        ("field", 123, "export-fixed-123"),
    ],
)
def test_repair_converts_every_shard_to_v2(
    copy_source: Any, name: str, step: int | None, new_name: str, state: str
) -> None:
    d = copy_source(name, state=state)
    if name == "field" and state == "tf":
        (d / "checkpoint").write_text('model_checkpoint_path: "export-?????-of-00001"\n')
    source = _pattern(d)
    originals = {p.name: p.read_bytes() for p in d.iterdir() if p.name != "checkpoint"}
    result = repair_dir(d, step=step)
    assert result.new_prefix == str(d / new_name)
    assert (d / f"{new_name}.index").is_file()
    assert_same_tensors(source, d / new_name)
    assert_int64_step(d / new_name, step or STEP)
    restored = _restore_all(d)  # through tf.train.latest_checkpoint, as an Estimator would
    for key, (_, _, value) in read_checkpoint(source).items():
        assert np.array_equal(restored[key], value), key
    assert {p.name: p.read_bytes() for p in d.iterdir() if p.name in originals} == originals
    again = scan(str(d))
    assert again.verdict is Verdict.HEALTHY and again.target == str(d / new_name)


def test_healthy_checkpoint_state_file_rewritten_naming_the_pattern(copy_source: Any) -> None:
    """A state file TensorFlow cannot follow is rewritten with the pattern, not the bare stem
    (``model.ckpt-40`` matches no file: TensorFlow would find no checkpoint)."""
    import tensorflow as tf

    d = copy_source("three_shards_healthy", state='model_checkpoint_path: "model.ckpt-40"\n')
    assert scan(str(d)).verdict is Verdict.REPAIRABLE
    result = repair_dir(d)
    assert result.new_prefix is None
    pattern = _pattern(d)
    assert tf.train.latest_checkpoint(str(d)) == pattern
    assert_int64_step(pattern, STEP)
    assert scan(str(d)).verdict is Verdict.HEALTHY


@pytest.fixture(params=["local", "ram"])
def root(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Local disk, or ``ram://``: a scheme, so every access goes through gfile and its glob."""
    import uuid

    import tensorflow as tf

    if request.param == "local":
        yield str(tmp_path)
        return
    path = f"ram://v1-sharded-{uuid.uuid4().hex}"
    tf.io.gfile.makedirs(path)
    yield path
    tf.io.gfile.rmtree(path)


def _put(src: Path, dst: str) -> str:
    import tensorflow as tf

    tf.io.gfile.makedirs(dst)
    for p in src.iterdir():
        if p.name != "checkpoint":
            tf.io.gfile.copy(str(p), f"{dst}/{p.name}")
    return dst


def test_output_dir_holds_every_shard(sources: dict[str, Path], root: str) -> None:
    import tensorflow as tf

    d = _put(sources["three_shards_healthy"], f"{root}/model")
    out = f"{root}/out"
    repair_dir(d, output_dir=out)
    assert sorted(tf.io.gfile.listdir(out)) == ["checkpoint"] + [
        f"model.ckpt-40-{i:05d}-of-00003" for i in range(3)
    ]
    assert tf.train.latest_checkpoint(out) == f"{out}/model.ckpt-40-?????-of-00003"
    assert_same_tensors(f"{d}/model.ckpt-40-?????-of-00003", f"{out}/model.ckpt-40-?????-of-00003")


def test_repair_in_place_on_each_filesystem(sources: dict[str, Path], root: str) -> None:
    d = _put(sources["three_shards"], f"{root}/model")
    assert [len(c.shards) for c in scan(d).checkpoints] == [3]
    repair_dir(d)
    assert_int64_step(f"{d}/model.ckpt-fixed-40", STEP)
    assert_same_tensors(f"{d}/model.ckpt-40-?????-of-00003", f"{d}/model.ckpt-fixed-40")
    assert scan(d).verdict is Verdict.HEALTHY
