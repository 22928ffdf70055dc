"""Storage: every file access (local disk or a TensorFlow filesystem), atomic writes, the
directory lock and the names of temporaries, repaired checkpoints and backups."""
