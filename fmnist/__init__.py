"""fmnist: a reproducible, MLflow-tracked benchmark pipeline for Fashion-MNIST."""

import os

# Nothing we run phones home: MLflow's usage telemetry is off in every process that imports us
# (a user who wants it can set MLFLOW_DISABLE_TELEMETRY=false).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Artifact downloads (checking a model's hash) would draw a progress bar per file into every log.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

__version__ = "0.1.0"
