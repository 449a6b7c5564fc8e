"""`fmnist runs import`: runs made elsewhere (a bundle of run records, another MLflow store) copied into the
configured store. Beside `fmnist.tracking`, not in it: no stage imports this, and the stages depend on the
tracking folder as a whole."""
