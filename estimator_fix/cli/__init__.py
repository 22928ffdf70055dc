"""The absl layer: flags, the options they become, printing, exit codes, progress display."""
