"""The runtimes: tensorflow-estimator 2.15.0 on this TensorFlow, quiet start-up, other Pythons.

``estimator_fix.compat`` leans on private TensorFlow modules, so what it assumes is tested on
the TensorFlow installed here, whichever it is: every private name the Estimator imports
resolves, the shims stand in for exactly what this release lacks, and TensorFlow 2.15 gets
none. ``verify --runtime`` is run across the other runtimes' virtual environments when the
Makefile has set them up (``make setup-all``), and skipped, saying so, when it has not.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from estimator_fix import compat
from tests.conftest import REPO, TESTDATA, run_cli

NEW_TF = not compat.has_builtin_estimator()
needs_new_tf = pytest.mark.skipif(
    not NEW_TF, reason="TensorFlow 2.15 ships these modules itself: nothing is shimmed"
)
_VENVS = (".venv", ".venv-tf221-py312", ".venv-tf221-py313")


def _estimator_root() -> Path:
    spec = importlib.util.find_spec("tensorflow_estimator")
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


def _private_imports() -> dict[tuple[str, str], str]:
    """(module, name) -> a file of tensorflow-estimator that imports it (tests left out)."""
    out: dict[tuple[str, str], str] = {}
    root = _estimator_root()
    for path in sorted(root.rglob("*.py")):
        if path.name.endswith("_test.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tensorflow."):
                for alias in node.names:
                    out.setdefault((node.module or "", alias.name), str(path.relative_to(root)))
    return out


def test_every_private_tensorflow_name_the_estimator_imports_resolves() -> None:
    import tensorflow  # noqa: F401  (the hook installs the shims when TensorFlow loads)

    unresolved = []
    for (module_name, name), where in sorted(_private_imports().items()):
        try:
            module = importlib.import_module(module_name)
            if not hasattr(module, name):
                importlib.import_module(f"{module_name}.{name}")
        except ImportError as e:
            unresolved.append(f"{module_name}.{name} ({where}): {e}")
    assert not unresolved, "\n".join(unresolved)


def test_shims_stand_in_only_for_what_this_tensorflow_lacks() -> None:
    import tensorflow as tf

    from estimator_fix.compat import estimator_shims

    package = Path(tf.__file__).parent
    for name in estimator_shims.SHIMMED_MODULES:
        relative = Path(*name.split(".")[1:])
        on_disk = (package / f"{relative}.py").exists() or (package / relative).is_dir()
        module = importlib.import_module(name)
        ours = getattr(module, "__file__", None) is None
        assert ours == (not on_disk), (name, on_disk)
        assert ours == NEW_TF, (name, tf.__version__)


def test_the_estimator_api_on_this_runtime() -> None:
    import tensorflow as tf
    import tensorflow.compat.v1 as v1

    assert tf.estimator.DNNClassifier.__module__.startswith("tensorflow_estimator")
    assert tf.compat.v1.estimator.Estimator is v1.estimator.Estimator
    assert callable(tf.keras.estimator.model_to_estimator)
    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, 3])
        assert tf.compat.v1.layers.dense(x, 2).shape.as_list() == [None, 2]
    if NEW_TF:
        assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"
        assert tf.keras.__name__.startswith("tf_keras")


@needs_new_tf
@pytest.mark.parametrize(
    ("module", "attr", "args"),
    [
        pytest.param("tensorflow.python.tpu.tpu_embedding", "AdagradParameters", (0.1,), id="tpu"),
        pytest.param(
            "tensorflow.python.tpu.session_support", "GracefulShutdownHook", (), id="hook"
        ),
        pytest.param(
            "tensorflow.python.distribute.estimator_training",
            "train_and_evaluate",
            (None, None, None, None),
            id="coordinator",
        ),
    ],
)
def test_what_needs_tensorflow_2_15_refuses_in_one_line(
    module: str, attr: str, args: tuple[object, ...]
) -> None:
    target = getattr(importlib.import_module(module), attr)
    with pytest.raises(compat.RuntimeUnsupportedError) as raised:
        target(*args)
    message = str(raised.value)
    assert "\n" not in message
    assert "use Python 3.11 with TensorFlow 2.15" in message
    assert compat.runtime_name() in message


@needs_new_tf
def test_a_local_run_config_is_unchanged() -> None:
    import tensorflow as tf

    config = tf.estimator.RunConfig(
        train_distribute=tf.distribute.OneDeviceStrategy("/cpu:0"), tf_random_seed=3
    )
    assert config._distribute_coordinator_mode is None
    assert config.tf_random_seed == 3 and config.num_worker_replicas == 1


def test_tensorflow_start_up_lines_stay_off_stderr() -> None:
    code = (
        "from estimator_fix import tfenv; tfenv.quiet_tensorflow(); import tensorflow as tf; "
        "print(float(tf.constant(2.0) * 3))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6.0"
    assert done.stderr == ""


def test_an_error_after_tensorflow_loaded_is_one_line(model_copy: Callable[[str], Path]) -> None:
    d = model_copy("dnn_classifier")
    result = run_cli(
        "export",
        f"--model_dir={d}",
        f"--export_dir={d.parent / 'export'}",
        f"--estimator={TESTDATA / 'models.py'}:no_such_builder",
        f"--serving_input_fn={TESTDATA / 'models.py'}:dnn_classifier_serving_input_fn",
    )
    assert result.returncode == 2, result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("estimator-fix: "), result.stderr
    assert "no_such_builder" in lines[0]


# --- verify --runtime ---------------------------------------------------------------------------


def _other_pythons() -> list[Path]:
    """The interpreters of the other runtimes' venvs; the other TensorFlow first."""
    here = Path(sys.prefix).resolve()
    found = [REPO / v / "bin" / "python" for v in _VENVS]
    others = [p for p in found if p.exists() and p.parent.parent.resolve() != here]
    legacy_here = not NEW_TF
    return sorted(others, key=lambda p: (p.parent.parent.name == ".venv") == legacy_here)


def _other_python() -> Path:
    others = _other_pythons()
    if not others:
        pytest.skip("no other runtime's venv here (`make setup-all` creates them)")
    return others[0]


def _export(d: Path, builder: str, serving: str) -> Path:
    base = d.parent / f"export-{builder}"
    result = run_cli(
        "export",
        f"--model_dir={d}",
        f"--export_dir={base}",
        f"--estimator={TESTDATA / 'models.py'}:{builder}",
        f"--serving_input_fn={TESTDATA / 'models.py'}:{serving}",
    )
    assert result.returncode == 0, result.stderr
    return base


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fixture", "builder"),
    [
        pytest.param("dnn_classifier", "dnn_classifier", id="canned"),
        pytest.param("custom_model_fn", "custom_estimator", id="custom"),
        pytest.param("keras_object_based", "keras_estimator", id="model_to_estimator"),
    ],
)
def test_verify_on_the_other_runtime(
    fixture: str, builder: str, model_copy: Callable[[str], Path]
) -> None:
    other = _other_python()
    base = _export(model_copy(fixture), builder, f"{builder}_serving_input_fn")
    result = run_cli("verify", f"--export_dir={base}", f"--runtime={other}", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    runtime = doc["runtime"]
    assert runtime["ok"] and doc["ok"]
    assert runtime["exported_step"] == doc["exported_step"]
    assert runtime["outputs"] and all(r["ok"] for r in runtime["outputs"])
    assert ("TensorFlow 2.15" in runtime["runtime"]) == NEW_TF


@pytest.mark.slow
def test_verify_runtime_with_a_parsing_receiver_and_this_interpreter(
    model_copy: Callable[[str], Path], tmp_path: Path
) -> None:
    d = model_copy("dnn_classifier")
    spec = tmp_path / "features.json"
    features = [{"name": n, "dtype": "float32", "shape": []} for n in ("x0", "x1", "x2")]
    spec.write_text(json.dumps(features))
    base = tmp_path / "export"
    exported = run_cli(
        "export",
        f"--model_dir={d}",
        f"--export_dir={base}",
        f"--estimator={TESTDATA / 'models.py'}:dnn_classifier",
        f"--serving_features={spec}",
    )
    assert exported.returncode == 0, exported.stderr
    result = run_cli("verify", f"--export_dir={base}", f"--runtime={sys.executable}", "--json")
    assert result.returncode == 0, result.stderr
    runtime = json.loads(result.stdout)["runtime"]
    assert runtime["ok"] and runtime["max_abs_diff"] == 0
    assert runtime["runtime"].startswith(f"Python {sys.version.split()[0]}, TensorFlow ")


def test_verify_runtime_refuses_an_interpreter_that_cannot(tmp_path: Path) -> None:
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'no TensorFlow here' >&2\nexit 3\n")
    fake.chmod(0o755)
    saved_model = tmp_path / "sm"
    saved_model.mkdir()
    (saved_model / "saved_model.pb").write_bytes(b"")
    result = run_cli("verify", f"--export_dir={saved_model}", f"--runtime={fake}")
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode in (2, 8), result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(np.array([b"a\x00", b"", b"\x00\x00"], dtype=object), id="bytes-with-nuls"),
        pytest.param(np.arange(6, dtype=np.float32).reshape(2, 3), id="float32"),
        pytest.param(np.array([[1, -2]], dtype=np.int64), id="int64"),
        pytest.param(np.array(["é", "b"]), id="unicode"),
        pytest.param(np.zeros((0, 4), dtype=np.float64), id="empty"),
    ],
)
def test_arrays_cross_interpreters_byte_for_byte(value: np.ndarray) -> None:
    from estimator_fix.verify import runtime_child

    back = runtime_child.decode(json.loads(json.dumps(runtime_child.encode(value))))
    assert back.shape == value.shape
    if value.dtype.kind in "OSU":
        assert [bytes(v) for v in back.reshape(-1)] == [
            v.encode() if isinstance(v, str) else v for v in value.reshape(-1)
        ]
    else:
        assert back.dtype == value.dtype and np.array_equal(back, value)


def test_a_difference_on_the_other_runtime_fails_verification() -> None:
    from estimator_fix.verify import elsewhere, runtime_child

    here = {"s": {"p": np.array([0.5, 1.0], np.float32), "c": np.array([b"a", b"b"], object)}}
    there = {
        "python": "3.12.1",
        "tensorflow": "2.21.0",
        "exported_step": 7,
        "outputs": {
            "s": {
                "p": runtime_child.encode(np.array([0.5, 1.1], np.float32)),
                "c": runtime_child.encode(np.array([b"a", b"b"], object)),
            }
        },
    }
    parity, checks = elsewhere._compare("py", there, here, 7, 1e-5)
    assert not parity.ok
    rows = {r.output: r for r in parity.outputs}
    assert rows["c"].ok and rows["c"].compared == "exact"
    assert not rows["p"].ok and rows["p"].mismatched == 1
    assert parity.max_abs_diff == pytest.approx(0.1, abs=1e-6)
    assert checks[0].startswith("FAILED: on Python 3.12.1, TensorFlow 2.21.0 (py)")
    parity, checks = elsewhere._compare("py", there, {"s": {"c": here["s"]["c"]}}, 6, 1e-5)
    assert not parity.ok and "global_step 7 there, 6 here" in checks[0]


# --- finding interpreters (the Makefile) ----------------------------------------------------------


def test_find_python_skips_a_refusing_shim_and_names_what_is_missing(tmp_path: Path) -> None:
    shims, root = tmp_path / "shims", tmp_path / "pyenv"
    shims.mkdir()
    refusing = shims / "python3.98"
    refusing.write_text("#!/bin/sh\necho 'pyenv: python3.98: command not found' >&2\nexit 127\n")
    real = root / "versions" / "3.98.2" / "bin" / "python3.98"
    real.parent.mkdir(parents=True)
    real.write_text('#!/bin/sh\necho "3.98 $0"\n')
    for script in (refusing, real):
        script.chmod(0o755)
    env = {"PATH": f"{shims}:/usr/bin:/bin", "PYENV_ROOT": str(root), "HOME": str(tmp_path)}
    script = str(REPO / "tools" / "find_python.sh")
    found = subprocess.run([script, "3.98"], capture_output=True, text=True, env=env, check=False)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(real)
    missing = subprocess.run([script, "3.97"], capture_output=True, text=True, env=env, check=False)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no working Python 3.97 found" in missing.stderr
    assert "PYTHON397=" in missing.stderr


@pytest.mark.slow
def test_repair_writes_the_same_bytes_on_the_other_runtime(tmp_path: Path) -> None:
    import shutil

    other = _other_python()
    trees = {}
    for name, python in (("here", Path(sys.executable)), ("there", other)):
        d = tmp_path / name / "missing_step"
        shutil.copytree(TESTDATA / "missing_step", d)
        done = subprocess.run(
            [str(python), "-m", "estimator_fix", "repair", f"--model_dir={d}", "--json"],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert done.stderr == ""
        # Everything but the times: the backup's name, the lock's note, the state file's stamp.
        trees[name] = {
            p.name: b"".join(
                ln for ln in p.read_bytes().splitlines(True) if b"_timestamps:" not in ln
            )
            for p in sorted(d.iterdir())
            if not p.name.startswith(("checkpoint.bak", ".estimator-fix.lock"))
        }
    assert trees["here"] == trees["there"]
