"""fmnist: a reproducible, MLflow-tracked benchmark pipeline for Fashion-MNIST."""

__version__ = "0.1.0"
