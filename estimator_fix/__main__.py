"""``python -m estimator_fix``: the same application as the ``estimator-fix`` console script."""

from estimator_fix.cli.app import run

if __name__ == "__main__":
    run()
