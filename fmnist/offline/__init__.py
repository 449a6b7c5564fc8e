"""Runs made where MLflow and DVC are not installed (an air-gapped GPU machine): run records, and the trainer
that writes them. Nothing here imports MLflow; `fmnist runs import` (fmnist/tracking) reads the records."""
