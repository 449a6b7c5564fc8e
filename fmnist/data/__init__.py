"""Data: fetch + verify, IDX parsing, preprocessing and splits, device tensors and augmentation."""
