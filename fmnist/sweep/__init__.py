"""`fmnist sweep`: searches of a recipe's space and seed grids on Optuna, every trial an MLflow run.

space.py   the `sweeps:` section of params.yaml (no stage reads it) and a trial's recipe (torch-free)
study.py   the study's storage (its own database: PostgreSQL or SQLite, never MLflow's), heartbeats, the pruner,
           the dead-trial rule (its MLflow run closed as KILLED, the trial retried), counts
worker.py  one worker process: trials until the study has its count, each a training in a tracked MLflow run that
           reports validation accuracy per epoch to the pruner
"""
