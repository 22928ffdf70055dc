"""The user's model code: SPEC loading, serving input functions from a features file, and the
user's Estimator built over a scratch model_dir."""
