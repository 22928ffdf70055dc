"""estimator-fix: take a broken legacy tf.estimator model directory to a verified SavedModel.

The data flow is one module per stage: ``scan`` -> ``plan`` -> ``repair`` -> ``export`` ->
``verify``. Reading a checkpoint (``checkpoint``, ``scan``) never imports TensorFlow.
"""

__version__ = "0.1.0"
