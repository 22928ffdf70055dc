"""scan on the frozen fixtures: verdicts, step classification and evidence, target choice."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from estimator_fix import errors
from estimator_fix.scan import scan
from estimator_fix.types import EvidenceSource, Format, Severity, StepStatus, Verdict
from tests.conftest import REPO, TESTDATA, manifest

MANIFEST = manifest()
# The fixtures scan reads without an error: all but missing_shard.
SCANNABLE = sorted(n for n in MANIFEST if n != "missing_shard")

EXPECTED_VERDICT = {
    name: Verdict.HEALTHY if MANIFEST[name]["healthy"] else Verdict.REPAIRABLE for name in SCANNABLE
}

EXPECTED_STATUS = {
    "missing_step": StepStatus.MISSING,
    "missing_step_no_evidence": StepStatus.MISSING,
    "keras_missing_step": StepStatus.MISSING,
    "renamed_step": StepStatus.RENAMED,
    "scoped_step": StepStatus.RENAMED,
    "conflicting_step": StepStatus.RENAMED,
    "session_loop_int32_step": StepStatus.RENAMED,
    "int32_step": StepStatus.WRONG_DTYPE,
    "float_step": StepStatus.WRONG_DTYPE,
}

EXPECTED_CODES = {
    "missing_step": {"step_missing"},
    "missing_step_no_evidence": {"step_missing", "step_no_evidence"},
    "renamed_step": {"step_renamed"},
    "scoped_step": {"step_renamed"},
    "session_loop_int32_step": {"step_renamed"},
    "conflicting_step": {"step_renamed", "step_conflict"},
    "int32_step": {"step_wrong_dtype"},
    "float_step": {"step_wrong_dtype"},
    "foreign_state_file": {"state_foreign_path", "no_latest_checkpoint"},
    "keras_missing_step": {"object_based_step_missing"},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_VERDICT))
def test_fixture_verdict_and_step(name: str) -> None:
    spec = MANIFEST[name]
    report = scan(str(TESTDATA / name))
    assert report.verdict is EXPECTED_VERDICT[name]
    target = report.target_report
    assert target is not None and target.name == spec["latest_checkpoint"]
    assert target.step is not None
    assert target.step.status is EXPECTED_STATUS.get(name, StepStatus.OK)
    if spec["step_key"] is not None:
        assert target.step.key == spec["step_key"]
        assert target.step.dtype == spec["step_dtype"]
    if spec["step"] is not None:
        assert spec["step"] in target.step.values
    codes = {p.code for p in report.problems if p.severity is not Severity.INFO}
    assert codes == EXPECTED_CODES.get(name, set())


@pytest.mark.parametrize("name", SCANNABLE)
def test_every_checkpoint_listed_with_format_and_shards(name: str) -> None:
    spec = MANIFEST[name]
    report = scan(str(TESTDATA / name))
    assert [c.name for c in report.checkpoints] == [c["prefix"] for c in spec["checkpoints"]]
    for c in report.checkpoints:
        assert c.error is None and c.tensor_count > 0
        if spec["format"] == "V1":
            assert c.format is Format.V1
        else:
            assert c.format in (Format.V2, Format.OBJECT_BASED)
            assert len(c.shards) == spec["data_shards"]
            assert all(s.exists and s.size is not None and s.size >= s.needed for s in c.shards)
    if name.startswith("keras"):
        assert report.target_report is not None
        assert report.target_report.format is Format.OBJECT_BASED


def test_conflicting_evidence_is_reported_not_resolved() -> None:
    report = scan(str(TESTDATA / "conflicting_step"))
    step = report.target_report.step  # type: ignore[union-attr]
    assert step is not None and step.conflict
    by_source = {e.source: e.value for e in step.evidence}
    assert by_source == {EvidenceSource.RENAMED_KEY: 106, EvidenceSource.PREFIX_SUFFIX: 6}


def test_evidence_names_its_sources() -> None:
    step = scan(str(TESTDATA / "session_loop_int32_step")).target_report.step  # type: ignore[union-attr]
    assert step is not None
    assert [(e.source, e.key, e.value) for e in step.evidence] == [
        (EvidenceSource.RENAMED_KEY, "my_global_step", 6),
        (EvidenceSource.PREFIX_SUFFIX, None, 6),
    ]


@pytest.mark.parametrize("name", SCANNABLE)
def test_tensor_list_matches_tensorflow(name: str) -> None:
    """The pure-Python reader agrees with tf.train.list_variables on every testdata checkpoint."""
    import tensorflow as tf

    for c in scan(str(TESTDATA / name)).checkpoints:
        reader = tf.train.load_checkpoint(c.prefix)
        dtypes = reader.get_variable_to_dtype_map()
        expected = sorted(
            (n, tuple(s), dtypes[n].name) for n, s in tf.train.list_variables(c.prefix)
        )
        assert sorted((t.name, t.shape, t.dtype) for t in c.tensors) == expected, c.prefix


@pytest.mark.parametrize("name", SCANNABLE)
def test_latest_prediction_matches_tensorflow(name: str, model_copy: Callable[[str], Path]) -> None:
    """Our prediction of tf.train.latest_checkpoint equals TensorFlow's own answer."""
    import tensorflow as tf

    d = model_copy(name)
    report = scan(str(d))
    assert report.state_file.tf_latest == tf.train.latest_checkpoint(str(d))


@pytest.mark.parametrize(
    "state_text",
    [
        pytest.param('model_checkpoint_path: "model.ckpt-3"\n', id="relative"),
        pytest.param('model_checkpoint_path: "{dir}/model.ckpt-6"\n', id="absolute-here"),
        pytest.param('model_checkpoint_path: "/nowhere/model.ckpt-6"\n', id="foreign"),
        pytest.param('model_checkpoint_path: "model.ckpt-9"\n', id="dangling"),
        pytest.param('model_checkpoint_path: "../other/model.ckpt-6"\n', id="outside-missing"),
        pytest.param('all_model_checkpoint_paths: "model.ckpt-6"\n', id="no-latest-field"),
        pytest.param(None, id="no-state-file"),
    ],
)
def test_state_file_cases_match_tensorflow(
    state_text: str | None, model_copy: Callable[[str], Path]
) -> None:
    import tensorflow as tf

    d = model_copy("dnn_classifier")
    if state_text is None:
        (d / "checkpoint").unlink()
    else:
        (d / "checkpoint").write_text(state_text.format(dir=d))
    report = scan(str(d))
    try:
        expected = tf.train.latest_checkpoint(str(d))
    except ValueError:  # TF raises for a state file without model_checkpoint_path
        expected = None
    assert report.state_file.tf_latest == expected
    if expected is None:
        assert report.verdict is Verdict.REPAIRABLE
        assert {"no_latest_checkpoint", "state_file_missing", "state_file_empty"} & {
            p.code for p in report.problems
        }
    assert report.target_report is not None


def test_checkpoint_outside_dir_is_flagged(model_copy: Callable[[str], Path]) -> None:
    d = model_copy("dnn_classifier")
    other = d.parent / "other"
    shutil.copytree(d, other)
    (d / "checkpoint").write_text(f'model_checkpoint_path: "{other}/model.ckpt-6"\n')
    report = scan(str(d))
    assert "state_outside_dir" in {p.code for p in report.problems}
    assert report.target.endswith("dnn_classifier/model.ckpt-6")  # type: ignore[union-attr]


def test_older_corrupt_checkpoint_is_a_warning(model_copy: Callable[[str], Path]) -> None:
    d = model_copy("dnn_classifier")
    (d / "model.ckpt-3.index").write_bytes(b"garbage" * 10)
    report = scan(str(d))
    assert report.verdict is Verdict.HEALTHY
    [problem] = [p for p in report.problems if p.code == "index_corrupt"]
    assert problem.severity is Severity.WARNING and "model.ckpt-3.index" in problem.message


def test_explicit_checkpoint_overrides_target() -> None:
    report = scan(str(TESTDATA / "missing_step"), checkpoint="model.ckpt-3")
    assert report.target_report is not None and report.target_report.name == "model.ckpt-3"
    with pytest.raises(errors.PathNotFoundError, match=r"model\.ckpt-99"):
        scan(str(TESTDATA / "missing_step"), checkpoint="model.ckpt-99")


def _truncate(path: Path, keep: int) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


BAD_INPUTS: dict[str, tuple[Callable[[Path], Path], type[errors.Error], str]] = {
    "missing-path": (lambda d: d / "nope", errors.PathNotFoundError, "nope"),
    "file-not-dir": (lambda d: d / "model.ckpt-6.index", errors.NotAModelDirError, "is a file"),
    "empty-dir": (
        lambda d: (shutil.rmtree(d), d.mkdir(), d)[-1],  # type: ignore[func-returns-value]
        errors.NotAModelDirError,
        "no checkpoint found",
    ),
    "garbage-index": (
        lambda d: ((d / "model.ckpt-6.index").write_bytes(b"\x00garbage" * 20), d)[-1],
        errors.CorruptIndexError,
        "model.ckpt-6.index",
    ),
    "truncated-index": (
        lambda d: (_truncate(d / "model.ckpt-6.index", 30), d)[-1],
        errors.CorruptIndexError,
        "model.ckpt-6.index",
    ),
    "missing-shard": (
        lambda d: ((d / "model.ckpt-6.data-00000-of-00001").unlink(), d)[-1],
        errors.MissingShardError,
        "model.ckpt-6.data-00000-of-00001",
    ),
    "truncated-shard": (
        lambda d: (_truncate(d / "model.ckpt-6.data-00000-of-00001", 5), d)[-1],
        errors.MissingShardError,
        "truncated",
    ),
    "index-is-a-directory": (
        lambda d: (
            (d / "model.ckpt-6.index").unlink(),
            (d / "model.ckpt-6.index").mkdir(),
            d,
        )[-1],
        errors.InputError,
        "model.ckpt-6.index",
    ),
    "state-file-garbage": (
        lambda d: ((d / "checkpoint").write_text("this is { not a proto"), d)[-1],
        errors.StateFileError,
        "checkpoint",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_error(case: str, model_copy: Callable[[str], Path]) -> None:
    make, error_type, needle = BAD_INPUTS[case]
    d = model_copy("missing_step")
    target = make(d)
    with pytest.raises(error_type) as info:
        scan(str(target))
    message = str(info.value)
    assert "\n" not in message and needle in message


def test_stale_temporaries_are_reported(model_copy: Callable[[str], Path]) -> None:
    d = model_copy("dnn_classifier")
    (d / ".estimator-fix-tmp-host-1-abcd-model.ckpt-fixed-6").mkdir()
    (d / "model.ckpt-fixed-6.data-00000-of-00002").write_bytes(b"x")  # its index never arrived
    report = scan(str(d))
    assert report.verdict is Verdict.HEALTHY
    assert sorted(Path(p).name for p in report.stale_temporaries) == [
        ".estimator-fix-tmp-host-1-abcd-model.ckpt-fixed-6",
        "model.ckpt-fixed-6.data-00000-of-00002",
    ]
    assert "stale_temporary" in {p.code for p in report.problems}


def test_scan_does_not_import_tensorflow() -> None:
    v2 = [n for n in SCANNABLE if MANIFEST[n]["format"] == "V2"]
    code = (
        "import sys\n"
        "from estimator_fix.scan import scan\n"
        f"for name in {v2!r}:\n"
        f"    scan({str(TESTDATA)!r} + '/' + name)\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)
