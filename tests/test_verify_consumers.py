"""Other consumers of the exports verify checks: saved_model_cli and tf.saved_model.load.

``saved_model_cli show --all`` lists the signatures verify found, and TensorFlow 2's
``tf.saved_model.load`` serves the predictions recorded in ``MANIFEST.json``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable

import pytest

from estimator_fix.verify import verify
from tests.conftest import REPO
from tests.verify_helpers import HEALTHY, Exported, _assert_matches_manifest, _predict_features

# The session-scoped export fixtures live in verify_helpers; registering it as a plugin gives
# every verify module the same fixture instances (one export per fixture per session).
pytest_plugins = ["tests.verify_helpers"]


# --- Other consumers of the same exports. ----------------------------------------------------


@pytest.mark.slow
def test_saved_model_cli_shows_the_signatures(
    exported_parsing: Callable[[str], Exported],
) -> None:
    ex = exported_parsing("dnn_classifier")  # three signatures: classify, classify, predict
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "saved_model_cli"), "show", "--all", "--dir", ex.export_path],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    signatures = verify(ex.export_path).signatures
    assert set(signatures) == {"serving_default", "classification", "predict"}
    for key in signatures:
        assert f"signature_def['{key}']" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("fixture", HEALTHY)
def test_tf2_load_serves_the_manifest_predictions(
    fixture: str, exported: Callable[[str], Exported]
) -> None:
    import tensorflow as tf

    ex = exported(fixture)
    loaded = tf.saved_model.load(ex.export_path)
    [key] = [k for k in ("serving_default", "predict") if k in loaded.signatures][:1]
    function = loaded.signatures[key]
    features = {k: tf.constant(v) for k, v in _predict_features(fixture).items()}
    outputs = {k: v.numpy() for k, v in function(**features).items()}
    assert _assert_matches_manifest(fixture, outputs)
