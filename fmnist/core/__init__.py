"""Shared, torch-free foundations: the config schema, the run record, errors, file output, stopping rules."""
