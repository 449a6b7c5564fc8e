"""fmnist: a reproducible, MLflow-tracked benchmark pipeline for Fashion-MNIST."""

import os

# Nothing we run phones home: MLflow's usage telemetry is off in every process that imports us
# (a user who wants it can set MLFLOW_DISABLE_TELEMETRY=false).
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

__version__ = "0.1.0"
