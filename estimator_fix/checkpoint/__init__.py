"""Checkpoint files read and written without TensorFlow: the V2 index table, tensor bytes, the
``checkpoint`` state file."""
