"""The training loop, optimisers and schedules."""
