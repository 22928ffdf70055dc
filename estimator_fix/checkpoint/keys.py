"""Names and numbers of the checkpoint format that several modules need. Does not perform I/O."""

STEP_KEY = "global_step"  # the key Estimators restore the training step from
OBJECT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"  # a TF2 object-based checkpoint's variable keys
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"  # its serialized object graph
TABLE_MAGIC = 0xDB4775248B80FB57  # the last 8 bytes (little-endian) of every `.index` table
INT64_MAX = 2**63 - 1  # the largest step an int64 `global_step` holds
# Where tf.keras.estimator.model_to_estimator keeps (and restores) its step: an object-based key.
OBJECT_STEP_KEY = "estimator_global_step/.ATTRIBUTES/VARIABLE_VALUE"
