"""rename, the zero-copy checkpoint surgery, on real Estimator checkpoints; fix --map."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import TESTDATA, manifest, read_checkpoint, run_cli, tree_digest

MANIFEST = manifest()


def _apply(model_dir: Path, output_dir: Path | None = None, **rules: Any) -> Any:
    from estimator_fix import scan, surgery
    from estimator_fix.surgery.rules import edit_from_rules

    report = scan.scan(str(model_dir))
    edit = edit_from_rules(surgery.surgery_index(report), **rules)
    return surgery.apply(report, edit, output_dir=str(output_dir) if output_dir else None)


def _originals(model_dir: Path, before: dict[str, tuple[int, bytes]]) -> None:
    """Every file that was there is byte for byte as it was (the state file aside)."""
    now = tree_digest(model_dir)
    assert {k: now.get(k) for k in before if k != "checkpoint"} == {
        k: v for k, v in before.items() if k != "checkpoint"
    }


def _assert_renamed(source: str, new: str, renames: dict[str, str], dropped: set[str]) -> None:
    """Every tensor of ``source`` is in ``new`` under its new name, equal; nothing else is."""
    old, got = read_checkpoint(source), read_checkpoint(new)
    expected = {renames.get(k, k) for k in old if k not in dropped}
    assert set(got) == expected
    for key, (dtype, shape, value) in old.items():
        if key in dropped:
            continue
        d, s, v = got[renames.get(key, key)]
        assert (d, s) == (dtype, shape), key
        assert np.array_equal(v, value), key


def test_scope_rename_in_place(model_copy):
    d = model_copy("dnn_classifier")
    before = tree_digest(d)
    result = _apply(d, mapping={"dnn/hiddenlayer_0": "dnn/first"})
    assert result.new_prefix == str(d / "model.ckpt-renamed-6")
    assert set(result.renames) == {
        "dnn/hiddenlayer_0/kernel",
        "dnn/hiddenlayer_0/bias",
    } | {k for k in read_checkpoint(d / "model.ckpt-6") if k.startswith("dnn/hiddenlayer_0/")}
    _assert_renamed(str(d / "model.ckpt-6"), result.new_prefix, dict(result.renames), set())
    _originals(d, before)
    assert 'model_checkpoint_path: "model.ckpt-renamed-6"' in (d / "checkpoint").read_text()
    assert result.linked and result.new_bytes < 64 * 1024
    data = d / "model.ckpt-renamed-6.data-00000-of-00001"
    assert data.stat().st_ino == (d / "model.ckpt-6.data-00000-of-00001").stat().st_ino
    again = _apply(d, mapping={"dnn/first": "dnn/again"})  # an edited checkpoint, edited again
    assert again.new_prefix == str(d / "model.ckpt-renamed2-6")


def test_regex_rename_partitioned_slices_follow(model_copy):
    from estimator_fix.checkpoint import index_file

    d = model_copy("dnn_linear_partitioned")
    result = _apply(d, regex=r"^(dnn|linear)/", replacement=r"tower/\1/")
    assert "linear/linear_model/x/weights" in result.renames
    _assert_renamed(str(d / "model.ckpt-6"), result.new_prefix, dict(result.renames), set())
    index = index_file.read_index(result.new_prefix + ".index")
    slices = [e for e in index.entries if e.is_slice]
    assert len(slices) == 6 and all(e.name.startswith("tower/linear/") for e in slices)
    assert index.header.num_shards == 2


def test_drop_and_additions(model_copy):
    from estimator_fix import scan, surgery

    d = model_copy("custom_model_fn")
    result = _apply(d, drop="/Adagrad$")
    old = read_checkpoint(d / "model.ckpt-6")
    dropped = {k for k in old if k.endswith("/Adagrad")}
    assert set(result.dropped) == dropped and dropped
    _assert_renamed(str(d / "model.ckpt-6"), result.new_prefix, {}, dropped)
    # The migrate API: renames plus new small tensors, written by a Saver.
    edit = surgery.Edit(
        renames={"hidden/kernel": "net/hidden/kernel"},
        additions=(
            surgery.NewTensor("beta1_power", np.array(0.9, np.float32)),
            surgery.NewTensor("counts", np.arange(3, dtype=np.int64)),
        ),
        notes=("beta1_power derived",),
    )
    added = surgery.apply(scan.scan(str(d)), edit)
    got = read_checkpoint(added.new_prefix)
    assert float(got["beta1_power"][2]) == pytest.approx(0.9)
    assert got["counts"][2].tolist() == [0, 1, 2]
    assert "net/hidden/kernel" in got and "hidden/kernel" not in got
    assert added.notes == ("beta1_power derived",)


def test_output_dir_leaves_source_alone(model_copy, tmp_path):
    d = model_copy("dnn_linear_partitioned")
    before = tree_digest(d)
    out = tmp_path / "out"
    result = _apply(d, out, mapping={"dnn": "deep"})
    assert tree_digest(d) == before
    assert sorted(p.name for p in out.iterdir()) == [
        "checkpoint",
        "model.ckpt-6.data-00000-of-00002",
        "model.ckpt-6.data-00001-of-00002",
        "model.ckpt-6.index",
    ]
    _assert_renamed(str(d / "model.ckpt-6"), str(out / "model.ckpt-6"), dict(result.renames), set())


def test_object_based_graph_follows(model_copy):
    from tensorflow.python.training import saver as saver_lib

    d = model_copy("keras_object_based")
    keys = read_checkpoint(d / MANIFEST["keras_object_based"]["latest_checkpoint"])
    old = next(k for k in keys if k.startswith("model/") or "/kernel/" in k)
    new = "renamed/" + old
    result = _apply(d, mapping={old: new})
    mapping = saver_lib.object_graph_key_mapping(result.new_prefix)
    assert new in mapping.values() and old not in mapping.values()
    assert "the object graph names only keys the checkpoint holds" in result.checks


# --- refusals: one line, exit 2, nothing written ----------------------------------------------

REFUSALS = {
    "two-to-one": ("dnn_classifier", ["--map=dnn/logits/bias=x", "--map=dnn/logits/kernel=x"]),
    "target-exists": ("dnn_classifier", ["--map=dnn/logits/bias=dnn/logits/kernel"]),
    "unmatched": ("dnn_classifier", ["--map=no/such/scope=x"]),
    "unmatched-regex": ("dnn_classifier", ["--regex=^nothing", "--replacement=x"]),
    "unmatched-drop": ("dnn_classifier", ["--drop=^nothing"]),
    "slice-apart": (
        "dnn_linear_partitioned",
        ["--map=linear/linear_model/x/weights/part_0=w0"],
    ),
    "step-renamed": ("dnn_classifier", ["--map=global_step=step"]),
    "step-dropped": ("dnn_classifier", ["--drop=^global_step$"]),
    "step-by-regex": ("dnn_classifier", ["--regex=^", "--replacement=new/"]),
    "map-and-regex": ("dnn_classifier", ["--map=a=b", "--regex=a", "--replacement=b"]),
    "map-and-map_file": ("dnn_classifier", ["--map=a=b", "--map_file=@MAP"]),
    "bad-map-file": ("dnn_classifier", ["--map_file=@BAD"]),
    "missing-map-file": ("dnn_classifier", ["--map_file=/no/such/map.json"]),
    "regex-no-replacement": ("dnn_classifier", ["--regex=dnn"]),
    "no-edit": ("dnn_classifier", []),
    "renamed-and-dropped": ("dnn_classifier", ["--map=dnn/logits/bias=b", "--drop=logits/bias$"]),
    "no-change": ("dnn_classifier", ["--map=dnn/logits/bias=dnn/logits/bias"]),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals(case, model_copy, tmp_path):
    fixture, args = REFUSALS[case]
    d = model_copy(fixture)
    (tmp_path / "map.json").write_text('{"a": "b"}')
    (tmp_path / "bad.json").write_text('["not", "an", "object"]')
    args = [
        a.replace("@MAP", str(tmp_path / "map.json")).replace("@BAD", str(tmp_path / "bad.json"))
        for a in args
    ]
    before = tree_digest(d)
    proc = run_cli("rename", f"--model_dir={d}", *args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert tree_digest(d) == before


def test_allow_unmatched_notes_it(model_copy):
    d = model_copy("dnn_classifier")
    result = _apply(d, mapping={"no/such": "x", "dnn/logits": "head"}, allow_unmatched=True)
    assert any("no/such" in n for n in result.notes)
    assert set(result.renames.values()) >= {"head/bias", "head/kernel"}


def test_dry_run_prints_exactly_what_is_written(model_copy):
    d = model_copy("dnn_linear_partitioned")
    before = tree_digest(d)
    args = ("rename", f"--model_dir={d}", "--map=dnn=deep", "--json")
    dry = run_cli(*args, "--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert tree_digest(d) == before
    planned = json.loads(dry.stdout)
    assert planned["dry_run"] is True
    real = run_cli(*args)
    assert real.returncode == 0, real.stderr
    done = json.loads(real.stdout)
    assert planned["renames"] == done["renames"] and planned["new_prefix"] == done["new_prefix"]
    written = set(done["files"]) - {done["state_backup"]}
    assert set(planned["files"]) == written
    new = set(tree_digest(d)) - set(before) - {".estimator-fix.lock"}  # repair's lock, too
    assert {str(d / n) for n in new} | {str(d / "checkpoint")} == set(done["files"])


# --- a refactored model restores, predicts and exports ------------------------------------------

_REFACTORED = textwrap.dedent(
    """
    import importlib.util
    import tensorflow as tf

    spec = importlib.util.spec_from_file_location("testdata_models", {models!r})
    models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(models)

    def model_fn(features, labels, mode, params):
        with tf.compat.v1.variable_scope("new_scope"):
            return models.custom_model_fn(features, labels, mode, params)

    def estimator(model_dir):
        return tf.estimator.Estimator(
            model_fn=model_fn, model_dir=model_dir, config=models.run_config(), params={{}}
        )

    serving_input_fn = models.custom_estimator_serving_input_fn
    """
)
MAP = {"hidden": "new_scope/hidden", "output": "new_scope/output"}


@pytest.fixture
def refactored(tmp_path: Path) -> Path:
    path = tmp_path / "refactored.py"
    path.write_text(_REFACTORED.format(models=str(TESTDATA / "models.py")))
    return path


def _load(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("refactored_model", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refactored_estimator_predicts_the_same(model_copy, refactored, tmp_path):
    import tensorflow as tf

    d = model_copy("custom_model_fn")
    result = _apply(d, mapping=MAP)
    assert all(v.startswith("new_scope/") for v in result.renames.values())
    module = _load(refactored)
    models = _load(TESTDATA / "models.py")
    features = models.PREDICT_FEATURES["custom_estimator"]
    estimator = module.estimator(str(tmp_path / "scratch"))
    got = list(
        estimator.predict(
            lambda: tf.data.Dataset.from_tensor_slices(features).batch(4),
            checkpoint_path=result.new_prefix,
        )
    )
    want = [p["predictions"] for p in MANIFEST["custom_model_fn"]["predictions"]]
    np.testing.assert_allclose([p["predictions"] for p in got], want, rtol=0, atol=1e-6)


def test_preflight_suggests_a_ready_map(model_copy, refactored, tmp_path):
    from estimator_fix import errors, fix
    from estimator_fix.options import Job

    d = model_copy("custom_model_fn")
    before = tree_digest(d)
    job = Job(
        "fix",
        str(d),
        estimator=f"{refactored}:estimator",
        serving_input_fn=f"{refactored}:serving_input_fn",
        export_dir=str(tmp_path / "export"),
    )
    with pytest.raises(errors.ModelMismatchError) as e:
        fix.fix(job)
    suggested = json.loads(str(e.value).split("--map_file: ", 1)[1])
    assert suggested == {k: "new_scope/" + k for k in suggested}
    assert {"hidden/kernel", "hidden/bias", "output/kernel", "output/bias"} <= set(suggested)
    assert tree_digest(d) == before


@pytest.mark.slow
def test_fix_map_file_exports_a_refactored_model(model_copy, refactored, tmp_path):
    d = model_copy("custom_model_fn")
    map_file = tmp_path / "map.json"
    map_file.write_text(json.dumps(MAP))
    proc = run_cli(
        "fix",
        f"--model_dir={d}",
        f"--estimator={refactored}:estimator",
        f"--serving_input_fn={refactored}:serving_input_fn",
        f"--export_dir={tmp_path / 'export'}",
        f"--map_file={map_file}",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["ok"] and doc["rename"]["new_prefix"] == str(d / "model.ckpt-renamed-6")
    assert doc["export"]["checkpoint"] == doc["rename"]["new_prefix"]
    assert doc["verify"]["ok"]


# --- pure parts -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,in_place,first",
    [
        ("model.ckpt-200", True, "model.ckpt-renamed-200"),
        ("model.ckpt-fixed-200", True, "model.ckpt-renamed-200"),
        ("model.ckpt-renamed3-200", True, "model.ckpt-renamed-200"),
        ("model.ckpt", True, "model.ckpt-renamed"),
        ("model.ckpt-fixed2-200", False, "model.ckpt-200"),
    ],
)
def test_renamed_names(name, in_place, first):
    from estimator_fix.storage import names

    candidates = names.renamed_candidates(name, in_place=in_place)
    assert candidates[0] == first
    if in_place:
        assert candidates[1] == first.replace("-renamed", "-renamed2")


@pytest.mark.parametrize("new", ["a", "tower/x\x00y", "\xff/name", "ü/long" * 20])
def test_slice_key_renamed(model_copy, new):
    from estimator_fix.checkpoint import index_file
    from estimator_fix.surgery.build import rename_slice_key

    index = index_file.read_index(str(TESTDATA / "dnn_linear_partitioned/model.ckpt-6.index"))
    for e in (e for e in index.entries if e.is_slice):
        key = rename_slice_key(e.key, new)
        assert index_file._decode_slice_name(key) == new
        assert key.endswith(e.key[-6:])
