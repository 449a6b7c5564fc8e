"""Retraining in CI: which architectures to retrain, and whether a retrained model becomes the champion.
Torch-free; the commands are `fmnist ci ...`, so a laptop, a CI runner and the rehearsal run the same."""
